# Two commands do everything on a fresh clone:
#   make serve   set up .venv, then serve the bundled offline model on http://127.0.0.1:8080
#   make test    set up .venv, then run the full test suite, then tests/test_compat.py on the
#                lowest supported versions (.venv-lowest, scripts/test_lowest.sh)
.PHONY: setup serve demo test test-lowest bench

setup:
	./scripts/setup.sh

serve: setup
	HF_HUB_OFFLINE=1 .venv/bin/rerankd serve

demo: setup
	printf '%s\n' "Paris is the capital and largest city of France." "Bananas are a yellow fruit rich in potassium." "The Eiffel Tower stands in Paris." | .venv/bin/rerankd rank --query "What is the capital of France?" --documents -

test: setup
	HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q --durations=20 tests
	./scripts/test_lowest.sh

test-lowest:
	./scripts/test_lowest.sh

bench: setup
	.venv/bin/python benchmarks/rerank100.py
