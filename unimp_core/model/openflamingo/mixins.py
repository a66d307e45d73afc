"""What open_flamingo's classes and hub language models lack, added to what the factory builds (the mixins go in
with `extend_instance`): input embeddings on MPT, a batch without images, logits at the label positions only,
an optional attention mask, fp32 weights under transformers 5, the pad token for generation."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import UnimpError


class EmbeddingFnMixin:
    """MosaicGPT (mpt-1b-redpajama-200b's remote code) lacks get/set_input_embeddings (open_flamingo's hack)."""

    def get_input_embeddings(self):
        return self.transformer.wte

    def set_input_embeddings(self, new_embeddings):
        self.transformer.wte = new_embeddings


def reads_images(model) -> bool:
    """Whether any decoder layer has cross-attention (`cross_attn_every_n_layers: 0` builds none)."""
    return any(layer.gated_cross_attn_layer is not None for layer in model.lang_encoder._get_decoder_layers())


class NoImageBatchMixin:
    """Accept a batch in which no sample has an image (vision_x (B, 0, F, C, H, W)).

    open_flamingo cannot encode zero images; one blank image per sample is encoded instead. No
    `<image>` token refers to it, so the text attends to nothing, exactly as without images.
    A model without cross-attention reads no images at all: its layers are conditioned on a placeholder
    and the vision tower and the Perceiver (a third of a training step on the tiny preset) never run.
    """

    def _encode_vision_x(self, vision_x: torch.Tensor):
        if not reads_images(self):
            placeholder = vision_x.new_zeros(vision_x.shape[0], max(vision_x.shape[1], 1), 1, 1)  # (B, T_img, 1, 1)
            for layer in self.lang_encoder._get_decoder_layers():
                layer.condition_vis_x(placeholder)
            return
        if vision_x.ndim == 6 and vision_x.shape[1] == 0:
            b, _, f, c, h, w = vision_x.shape
            vision_x = vision_x.new_zeros(b, 1, f, c, h, w)
        return super()._encode_vision_x(vision_x)


class LabelLogitsMixin:
    """`Flamingo.forward(..., logits_at=positions)`: the output head only where the loss reads it.

    Training reads the logits of a few answer positions, but the LM head (hidden -> the whole
    vocabulary, catalogue included) over every position of every row, padding too, is most of a small
    model's work. With `logits_at` ((B, T) bool, or (N,) flat indices into the (B, T) positions), the LM
    returns its last hidden states (post final norm, as transformers' built-in LMs give them), the head
    runs on the selected positions only and the output's `logits` is (N, V), in `mask.nonzero()` (or
    the indices') order; the same numbers as `logits[logits_at]`. With `item_rows` ((N,) bool) and
    `item_columns` (lo, hi), `logits` is a pair: those rows over the item tokens lo..hi-1 alone
    (N_item, hi - lo), the other rows over the whole vocabulary; in training with a content loss
    (`model.attribute_loss`) also the item rows scored by the items' content alone, and that loss's weight
    (`training.loss.SplitLogits`). `position_ids` without an attention mask is transformers' packed-sequence
    format (`model.packing`). An LM that cannot skip its logits (remote code without `logits_to_keep`)
    computes them all and is indexed. Being `forward`, this runs inside DDP / DeepSpeed wrappers like any
    forward pass.
    """

    def forward(self, vision_x, lang_x, attention_mask=None, labels=None, clear_conditioned_layers=True,
                past_key_values=None, use_cache=False, logits_at=None, position_ids=None, item_rows=None,
                item_columns=None):
        if logits_at is None:
            return super().forward(vision_x, lang_x, attention_mask=attention_mask, labels=labels,
                                   clear_conditioned_layers=clear_conditioned_layers,
                                   past_key_values=past_key_values, use_cache=use_cache)
        from transformers.modeling_outputs import CausalLMOutput

        lm = self.lang_encoder
        if logits_at.dtype == torch.bool:
            logits_at = logits_at.flatten().nonzero().squeeze(1)  # (N,) in row-major order
        extra = {} if position_ids is None else {"position_ids": position_ids}
        if not lm._use_cached_vision_x:
            self._encode_vision_x(vision_x=vision_x)
            self._condition_media_locations(input_ids=lang_x)
        content = getattr(lm, "item_content", None)
        scores_alone = self.training and content is not None and content.loss_weight > 0  # model.attribute_loss
        try:
            head = lm.get_output_embeddings()
            logits = None
            if head is not None and getattr(lm, "_unimp_keeps_logits", True):
                try:
                    out = lm(input_ids=lang_x, attention_mask=attention_mask, output_hidden_states=True,
                             logits_to_keep=1, use_cache=False, **extra)
                    hidden = out.hidden_states[-1].flatten(0, 1)[logits_at]  # (N, H)
                    logits = head(hidden) if item_rows is None else split_head(head, hidden, item_rows, item_columns)
                    if item_rows is not None and scores_alone:
                        logits = (*logits, content.scores_alone(hidden[item_rows]), content.loss_weight)
                except TypeError as exc:
                    if "logits_to_keep" not in str(exc):
                        raise
                    lm._unimp_keeps_logits = False
            if logits is None:
                if scores_alone:
                    raise UnimpError(f"model.attribute_loss: {type(lm).__name__} does not return its hidden states")
                logits = lm(input_ids=lang_x, attention_mask=attention_mask, **extra).logits.flatten(0, 1)[logits_at]
                if item_rows is not None:
                    lo, hi = item_columns
                    logits = (logits[item_rows, lo:hi], logits[~item_rows])
        finally:
            if clear_conditioned_layers:
                lm.clear_conditioned_layers()
        return CausalLMOutput(logits=logits)


def split_head(head: nn.Module, hidden: torch.Tensor, item_rows: torch.Tensor,
                item_columns: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The output head on (N, H) hidden states: the item rows against the item tokens' rows of the head
    alone ((N_item, hi - lo)), the others against all of it ((N_other, V))."""
    lo, hi = item_columns
    weight = head.scoring_weight() if hasattr(head, "scoring_weight") else head.weight  # (V, H); item content adds to it
    bias = getattr(head, "bias", None)
    return (F.linear(hidden[item_rows], weight[lo:hi], None if bias is None else bias[lo:hi]),
            F.linear(hidden[~item_rows], weight, bias))


class OptionalMaskMixin:
    """Let the Flamingo LM run without an attention mask.

    open_flamingo's `FlamingoLMMixin.forward(input_ids, attention_mask, ...)` requires the mask;
    transformers >= 5.18 `generate()` drops an all-ones mask and the call fails. None is passed on to
    the LM, which treats it as "attend to every token" (all ones), whatever the cache length.
    """

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        return super().forward(input_ids, attention_mask, **kwargs)


def fp32_kwargs() -> dict[str, Any]:
    """Load weights in float32, as the paper's code did (transformers 4 default); transformers 5 defaults to the
    checkpoint's dtype ("auto"), which would mix fp16 LM weights with fp32 Perceiver/cross-attention.
    Mixed precision is the training loop's business (autocast)."""
    import transformers

    return {"dtype": torch.float32} if int(transformers.__version__.split(".")[0]) >= 5 else {}


def lacks_input_embeddings(lm) -> bool:
    try:
        return lm.get_input_embeddings() is None
    except (NotImplementedError, AttributeError):
        return hasattr(lm, "transformer") and hasattr(lm.transformer, "wte")


def set_generation_tokens(lm, tok) -> None:
    lm.config.pad_token_id = tok.pad_token_id
    if getattr(lm, "generation_config", None) is not None:
        lm.generation_config.pad_token_id = tok.pad_token_id
