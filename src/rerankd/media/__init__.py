"""Images and video for vision-language rerankers, and the policy that keeps fetching them safe."""
