"""torch modules for vision-language yes/no rerankers (Qwen3-VL): vision tower, then the text model.

One forward pass over a batch of sequences (each carrying its media and 3-row M-RoPE positions in
``Encoded.extras``, see :mod:`rerankd.families.vision_language`):

1. Every distinct image and video of the batch not already in the :class:`FeatureCache` goes through
   the vision tower in one call (transformers' ``Qwen3VLVisionModel``; its attention keeps images
   apart). The merged tokens and the deepstack features are cached by content hash.
2. Token embeddings get the visual tokens in place of the image/video pads, in order.
3. The text model runs with the M-RoPE positions and the deepstack features added after its first
   layers — packed on CPU (all sequences in one row, attention per sequence through
   :func:`rerankd.backends.packed.packing`, each sequence keeping its own positions; the prefix every
   sequence of a request shares — prompt, instruction, query — runs once) or left-padded.
4. Only each sequence's last hidden state is read, times one row (w_yes − w_no).
"""

from __future__ import annotations

from typing import Any, Sequence

from rerankd._optional import require
from rerankd.backends.feature_cache import FeatureCache
from rerankd.families import Encoded, Family
from rerankd.families.heads import YesNoRow

torch = require("torch")
nn = torch.nn


class VisionLanguageYesNo(nn.Module):
    """l_yes − l_no of a Qwen3-VL model for a batch of sequences (taken as sequences, not a padded batch)."""

    def __init__(self, model: Any, head_row: Any, pad_id: int, image_token_id: int, video_token_id: int,
                 cache: FeatureCache | None = None, packed: bool = False) -> None:
        super().__init__()
        self.model = model  # transformers' Qwen3VLModel: .visual and .language_model
        self.register_buffer("head_row", head_row.float().reshape(-1), persistent=False)
        self.pad_id = pad_id
        self.image_token_id = image_token_id
        self.video_token_id = video_token_id
        self.cache = cache
        self.packed = packed
        #: Vision tower calls and the images/videos they ran (the feature cache's savings show here).
        self.vision_calls = 0
        self.vision_items = 0

    @property
    def text_model(self) -> Any:
        return self.model.language_model

    def packed_twin(self) -> "VisionLanguageYesNo":
        """The same weights and cache, run packed (one row, attention per sequence)."""
        twin = VisionLanguageYesNo(self.model, self.head_row, self.pad_id, self.image_token_id, self.video_token_id,
                                   self.cache, packed=True)
        return twin.eval()

    # -- vision -----------------------------------------------------------------------------------------

    def visual_features(self, sequences: Sequence[Encoded]) -> dict[bytes, tuple[Any, ...]]:
        """key → (merged tokens, deepstack feature per deepstack layer...) for every medium of the batch."""
        found: dict[bytes, tuple[Any, ...]] = {}
        missing: dict[bytes, Any] = {}
        for seq in sequences:
            for visual in (seq.extras or {}).get("visuals", ()):
                if visual.key in found or visual.key in missing:
                    continue
                hit = self.cache.get(visual.key) if self.cache is not None else None
                if hit is not None:
                    found[visual.key] = hit
                else:
                    missing[visual.key] = visual
        if missing:
            found.update(self._run_tower(list(missing.values())))
        return found

    def _run_tower(self, visuals: list[Any]) -> dict[bytes, tuple[Any, ...]]:
        visual_model = self.model.visual
        device = self.head_row.device
        pixels = torch.cat([torch.from_numpy(v.pixel_values) for v in visuals]).to(device, visual_model.dtype)
        grids = torch.tensor([v.grid_thw for v in visuals], device=device)
        out = visual_model(pixels, grid_thw=grids, return_dict=True)
        merge = visual_model.spatial_merge_size
        sizes = (grids.prod(-1) // merge**2).tolist()
        merged = torch.split(out.pooler_output, sizes)
        deep = [torch.split(f, sizes) for f in out.deepstack_features]
        self.vision_calls += 1
        self.vision_items += len(visuals)
        result = {}
        for i, visual in enumerate(visuals):
            entry = (merged[i].clone(), *[d[i].clone() for d in deep])
            result[visual.key] = entry
            if self.cache is not None:
                self.cache.put(visual.key, entry)
        return result

    # -- text --------------------------------------------------------------------------------------------

    def _embed(self, ids: Any, sequences: Sequence[Encoded], features: dict[bytes, tuple[Any, ...]]
               ) -> tuple[Any, Any, list[Any] | None]:
        """Token embeddings with visual tokens scattered in, the visual mask and the deepstack inputs."""
        embeds = self.text_model.embed_tokens(ids)
        entries = [features[v.key] for seq in sequences for v in (seq.extras or {}).get("visuals", ())]
        if not entries:
            return embeds, None, None
        mask = (ids == self.image_token_id) | (ids == self.video_token_id)
        visual = torch.cat([e[0] for e in entries]).to(embeds.dtype)
        if int(mask.sum()) != visual.shape[0]:
            from rerankd.errors import ModelError

            raise ModelError(f"{int(mask.sum())} image/video tokens but {visual.shape[0]} visual features")
        embeds = embeds.masked_scatter(mask.unsqueeze(-1), visual)
        layers = len(entries[0]) - 1
        deepstack = [torch.cat([e[1 + k] for e in entries]).to(embeds.dtype) for k in range(layers)] or None
        return embeds, mask, deepstack

    def forward(self, sequences: Sequence[Encoded]) -> Any:
        features = self.visual_features(sequences)
        return self._packed(sequences, features) if self.packed else self._padded(sequences, features)

    def _positions(self, seq: Encoded) -> Any:
        extras = seq.extras or {}
        positions = extras.get("position_ids")
        if positions is None:  # a text-only sequence: the three rows are 0..n-1
            return torch.arange(len(seq)).expand(3, -1)
        return torch.from_numpy(positions)

    def _packed(self, sequences: Sequence[Encoded], features: dict[bytes, tuple[Any, ...]]) -> Any:
        from rerankd.backends.packed import MIN_SHARED_PREFIX, SharedPrefix, packing, shared_prefix_length

        device = self.head_row.device
        bounds = [0]
        for seq in sequences:
            bounds.append(bounds[-1] + len(seq))
        ids = torch.tensor([t for s in sequences for t in s.input_ids], device=device).unsqueeze(0)
        per_seq = [self._positions(s) for s in sequences]
        positions = torch.cat(per_seq, dim=1).unsqueeze(1).to(device)
        embeds, mask, deepstack = self._embed(ids, sequences, features)
        shared = self._shared_prefix(sequences, shared_prefix_length(sequences)) if len(sequences) > 1 else 0
        # The prompt, instruction and query (its images too) open every sequence of a request: their
        # keys and values are computed once and every document attends to them. Their positions are
        # the same in every sequence (the query's grids are), checked here all the same.
        if shared < MIN_SHARED_PREFIX or not all(torch.equal(p[:, :shared], per_seq[0][:, :shared]) for p in per_seq):
            with packing(bounds):
                hidden = self._text(embeds, positions, mask, deepstack)
            last = torch.tensor(bounds[1:], device=device) - 1
            return hidden[last].float() @ self.head_row
        keep = torch.ones(ids.shape[1], dtype=torch.bool, device=device)
        for start in bounds[:-1]:
            keep[start:start + shared] = False
        head = torch.zeros_like(keep)
        head[:shared] = True
        prefix = SharedPrefix()
        with packing([0, shared], prefix):
            self._text(*self._select(head, embeds, positions, mask, deepstack))
        prefix.recording = False
        rest = [0]
        for seq in sequences:
            rest.append(rest[-1] + len(seq) - shared)
        with packing(rest, prefix):
            hidden = self._text(*self._select(keep, embeds, positions, mask, deepstack))
        last = torch.tensor(rest[1:], device=device) - 1
        return hidden[last].float() @ self.head_row

    def _shared_prefix(self, sequences: Sequence[Encoded], shared: int) -> int:
        """``shared`` cut before the first visual token whose picture is not the same in every sequence.

        Equal ids do not mean equal inputs here: every image pad is one token id, so documents whose
        pictures have the same grid (most photos of one camera or site) have identical ids through
        their image tokens, while the embeddings scattered in there differ.
        """
        merge = int(self.model.visual.spatial_merge_size) ** 2
        visual_ids = (self.image_token_id, self.video_token_id)
        first = (sequences[0].extras or {}).get("visuals", ())
        differs = next((j for j, visual in enumerate(first) if any(
            len(v := (s.extras or {}).get("visuals", ())) <= j or v[j].key != visual.key for s in sequences[1:])),
            None)
        if differs is None:
            return shared
        before = sum(v.patches // merge for v in first[:differs])  # visual tokens of the pictures all share
        seen = 0
        for position, token in enumerate(sequences[0].input_ids[:shared]):
            if token in visual_ids:
                if seen == before:
                    return position
                seen += 1
        return shared

    @staticmethod
    def _select(keep: Any, embeds: Any, positions: Any, mask: Any, deepstack: list[Any] | None
                ) -> tuple[Any, Any, Any, list[Any] | None]:
        """The tokens of the packed row where ``keep`` is set, with their positions and visual inputs."""
        if mask is None:
            return embeds[:, keep], positions[:, :, keep], None, None
        sub_mask = mask[:, keep]
        if not bool(sub_mask.any()):
            return embeds[:, keep], positions[:, :, keep], None, None
        rows = (mask[0].cumsum(0) - 1)[keep & mask[0]]  # which deepstack rows these visual tokens own
        return (embeds[:, keep], positions[:, :, keep], sub_mask,
                [d[rows] for d in deepstack] if deepstack is not None else None)

    def _text(self, embeds: Any, positions: Any, mask: Any, deepstack: list[Any] | None) -> Any:
        """The text model on one packed row; its last hidden states (tokens, dim)."""
        return self.text_model(inputs_embeds=embeds, position_ids=positions, visual_pos_masks=mask,
                               deepstack_visual_embeds=deepstack, use_cache=False).last_hidden_state[0]

    def _padded(self, sequences: Sequence[Encoded], features: dict[bytes, tuple[Any, ...]]) -> Any:
        out, _ = self.padded_text(sequences, features)
        return out.last_hidden_state[:, -1, :].float() @ self.head_row

    def padded_text(self, sequences: Sequence[Encoded], features: dict[bytes, tuple[Any, ...]],
                    hidden_states: bool = False) -> tuple[Any, Any]:
        """The text model's output over the left-padded batch (every layer's states with ``hidden_states``)
        and the attention mask; training (:mod:`rerankd.training.models`) reads it through the same code."""
        device = self.head_row.device
        width = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(sequences), width), dtype=torch.long)
        positions = torch.ones((3, len(sequences), width), dtype=torch.long)
        for row, seq in enumerate(sequences):
            n = len(seq)
            ids[row, width - n:] = torch.tensor(seq.input_ids)
            attention[row, width - n:] = 1
            positions[:, row, width - n:] = self._positions(seq)
        ids, attention, positions = ids.to(device), attention.to(device), positions.to(device)
        embeds, mask, deepstack = self._embed(ids, sequences, features)
        out = self.text_model(inputs_embeds=embeds, attention_mask=attention, position_ids=positions,
                              visual_pos_masks=mask, deepstack_visual_embeds=deepstack,
                              output_hidden_states=hidden_states, use_cache=False)
        return out, attention


def build_vision_language(family: Family, head: YesNoRow, path: str, common: dict[str, Any],
                          cache: FeatureCache | None = None) -> VisionLanguageYesNo:
    """Load a ``*ForConditionalGeneration`` vision-language model and keep its base model and yes−no row.

    The full-vocabulary ``lm_head`` is not kept beyond reading the row (tied to the embeddings in the 2B).
    """
    from rerankd.backends.torch_modules import yes_minus_no_row

    transformers = require("transformers")
    lm = transformers.AutoModelForImageTextToText.from_pretrained(path, **common)
    base = lm.model
    if family.config.get("tie_word_embeddings", False) or (family.config.get("text_config") or {}).get(
            "tie_word_embeddings", False):
        weight = base.get_input_embeddings().weight
        row = (weight[head.yes_id] - weight[head.no_id]).detach().float()
    elif hasattr(lm, "lm_head"):
        weight = lm.lm_head.weight
        row = (weight[head.yes_id] - weight[head.no_id]).detach().float()
    else:
        row = yes_minus_no_row(family, head, base)
    config = lm.config
    return VisionLanguageYesNo(base, row, family.pad_token_id, int(config.image_token_id), int(config.video_token_id),
                               cache)
