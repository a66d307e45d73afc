"""OpenFlamingo's model spec (torch-free: specs validate with it): which model to build, its added vocabulary
and what is trained.

The preset table the factory uses lives in `unimp_core.model.openflamingo.presets`; this module only names the
presets so a spec can be validated (and printed by `--dry-run`) instantly.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, get_args

from pydantic import Field, model_validator

from ...specs.base import Spec
from ...specs.model import AUTO_SEMANTIC_ITEMS, FamilySpec, ItemCodesRecord, ItemIds
from ...task_names import RecPrompt

Preset = Literal["tiny", "3b", "3b-instruct", "4b", "4b-instruct", "9b", "custom"]
PRESET_NAMES: tuple[str, ...] = get_args(Preset)


class TinyModelSpec(Spec):
    """Sizes of the offline `tiny` preset (random weights, built from configs; for tests and demos)."""

    lm_arch: Literal["gpt_neox", "llama"] = Field(
        default="gpt_neox", description="Causal-LM architecture of the tiny language model (GPT-NeoX as RedPajama-INCITE, or Llama)."
    )
    hidden_size: int = Field(default=64, ge=8, le=4096, description="Hidden size of the tiny language model.")
    layers: int = Field(default=2, ge=1, le=48, description="Decoder layers of the tiny language model.")
    heads: int = Field(default=4, ge=1, le=64, description="Attention heads of the tiny language model.")
    ffn_size: int | None = Field(
        default=None, ge=8, le=65536,
        description="Inner width of each decoder layer's feed-forward (default: 4 x hidden_size, GPT's; SASRec's is "
        "hidden_size).",
    )
    activation: Literal["gelu", "relu", "silu"] | None = Field(
        default=None,
        description="The feed-forward's activation (default: the architecture's own, GPT-NeoX's GELU or Llama's gated "
        "SiLU; SASRec's is ReLU).",
    )
    max_positions: int = Field(default=1024, ge=64, description="Longest token sequence the tiny language model accepts.")
    dropout: float = Field(
        default=0.0, ge=0.0, lt=1.0,
        description="Dropout of the tiny language model (attention and residual; SASRec uses 0.2-0.5 on sparse data).",
    )
    tie_embeddings: bool = Field(
        default=False,
        description="Share the tiny LM's input and output embedding rows (as SASRec scores items with its item embeddings).",
    )
    scale_embeddings: bool = Field(
        default=False,
        description="Multiply the token embeddings by sqrt(hidden_size) on input only, as SASRec and the original "
        "Transformer do (with tied rows an item weighs more as input than as answer).",
    )
    vocab_size: int = Field(
        default=4096, ge=300, le=65536,
        description="Target size of the byte-level BPE vocabulary trained on the dataset's text (before added tokens).",
    )
    vision_width: int = Field(default=64, ge=8, le=2048, description="Width of the tiny ViT (also the visual feature size).")
    vision_layers: int = Field(default=2, ge=1, le=48, description="Transformer layers of the tiny ViT.")
    vision_head_width: int = Field(default=32, ge=8, description="Width of one attention head of the tiny ViT.")
    image_size: int = Field(default=32, ge=8, le=1024, description="Side of the square images the tiny ViT reads, in pixels.")
    patch_size: int = Field(default=8, ge=2, le=64, description="Side of one ViT patch, in pixels.")
    perceiver_depth: int = Field(default=1, ge=1, le=12, description="Layers of the tiny Perceiver resampler (OpenFlamingo: 6).")
    perceiver_latents: int = Field(default=8, ge=1, le=256, description="Visual tokens per image after the Perceiver (OpenFlamingo: 64).")
    perceiver_heads: int = Field(default=2, ge=1, le=32, description="Attention heads of the tiny Perceiver (OpenFlamingo: 8).")
    perceiver_dim_head: int = Field(default=32, ge=8, le=256, description="Width of one Perceiver attention head (OpenFlamingo: 64).")

    @model_validator(mode="after")
    def _divisible(self) -> "TinyModelSpec":
        if self.hidden_size % self.heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of heads {self.heads}")
        if self.vision_width % self.vision_head_width:
            raise ValueError(f"vision_width {self.vision_width} is not a multiple of vision_head_width {self.vision_head_width}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        return self



class ModelSpec(FamilySpec):
    """Which OpenFlamingo model to build, its added vocabulary and what is trained."""

    TITLE: ClassVar[str] = "OpenFlamingo"

    family: Literal["openflamingo"] = Field(
        default="openflamingo", description="Model family (unimp_core.model.families): openflamingo, the paper's."
    )
    preset: Preset = Field(
        default="tiny",
        description="tiny (offline, random weights) | 3b | 3b-instruct | 4b | 4b-instruct (the paper's main model) | 9b "
        "(OpenFlamingo checkpoints from the Hugging Face hub) | custom (give --vision, --lm, ...).",
    )
    vision: str | None = Field(default=None, description="custom: open_clip vision model name, e.g. ViT-L-14.")
    vision_pretrained: str | None = Field(
        default=None, description="custom: open_clip pretrained tag or weights file for the vision model, e.g. openai (none: random)."
    )
    lm: str | None = Field(default=None, description="custom: causal language model, a local folder or a Hugging Face hub id.")
    tokenizer: str | None = Field(default=None, description="custom: tokenizer folder or hub id (default: the --lm one).")
    cross_attn_every_n_layers: int | None = Field(
        default=None, ge=0,
        description="custom/tiny: a gated cross-attention layer before every n-th decoder layer (tiny: 1); 0: none, a plain "
        "language model for data without images (with nothing to attend to, the layers were a third of a training step).",
    )
    checkpoint: str | None = Field(
        default=None,
        description="OpenFlamingo checkpoint: a local .pt file or a hub repo holding checkpoint.pt "
        "(presets: overrides the preset's; custom: optional).",
    )
    train_lm: bool | None = Field(
        default=None,
        description="Also train the language model body (default: yes for tiny, whose weights are random; "
        "no for the OpenFlamingo presets and custom, frozen as the paper).",
    )
    image_gen_codes: int = Field(
        default=0, ge=0, le=65536,
        description="Image-code tokens img_<i> to add for image generation (0: image generation off).",
    )
    item_ids: ItemIds = Field(
        default="auto",
        description="How prompts name items: atomic (one new token item_<i> per item: an input and an output "
        "embedding row each) or semantic (the item's code tuple from `unimp tokenize-items`, <a_12><b_7><c_201><d_0>: "
        f"tokens shared by all items). auto: semantic above {AUTO_SEMANTIC_ITEMS:,} items when the dataset has item "
        "codes, else atomic.",
    )
    rec_prompt: RecPrompt = Field(
        default="sequence",
        description="How rec prompts lay out the history: sequence (`<answer>` and the items back to back, no question, "
        "each item's last token predicting the next item, as a sequential recommender reads them; an atomic item is "
        "one token) or chunks (the paper's: each item followed by `<answer> item <|endofchunk|>`, the question last; "
        "three tokens an item). Other tasks keep their prompts.",
    )
    describe_items: bool = Field(
        default=True,
        description="Write each item's description (category, price, brand, title) after it in prompts, as the paper "
        "does. false: prompts name items by id (and image) alone, one token an atomic item, and item content reaches "
        "the model through item_attributes instead, at no prompt length.",
    )
    item_attributes: bool = Field(
        default=True,
        description="Add the mean of an item's shared attribute embeddings to its token's input and output rows, or "
        "its attention (attribute_fusion) (atomic ids; semantic ids carry content in their codes). Attributes: the items table's `attributes` "
        "(`prepare --items`), its brand and the parts of its category (`Beauty > Skin Care`, `Drama, Mystery`).",
    )
    attribute_fusion: Literal["rows", "attention"] = Field(
        default="rows",
        description="Where item attributes enter: rows (added to the item token's input and output rows) or attention "
        "(added to the queries and keys of the item's positions at every decoder layer; rows, values and scores stay "
        "ids, as NOVA / DIF-SR fuse side information).",
    )
    attribute_dropout: float = Field(
        default=0.0, ge=0.0, lt=1.0,
        description="In training, drop an item's whole attribute vector with this probability (the item's own row "
        "must then learn what its attributes do not say).",
    )
    attribute_loss: float = Field(
        default=0.0, ge=0.0,
        description="In training, score each item answer a second time by the items' attribute vectors alone (no "
        "own rows) and add that softmax's loss at this weight (with optim.item_softmax), so the attributes must "
        "tell items apart by themselves (0: off).",
    )
    item_codes: ItemCodesRecord | None = Field(
        default=None,
        description="Semantic ids: their levels and codes, set from the dataset's item codes when training starts "
        "(leave it out).",
    )
    trust_remote_code: bool = Field(
        default=True, description="Let transformers run a hub model's own code (the MPT language models need it, as in the paper's code)."
    )
    local_files_only: bool = Field(
        default=False, description="Load the language model and tokenizer from the local Hugging Face cache only (no download)."
    )
    init_seed: int = Field(
        default=0,
        description="Seed of the randomly initialised weights (all of tiny; the Perceiver and cross-attention of the "
        "others), so a run folder rebuilds the same frozen weights.",
    )
    tiny: TinyModelSpec = Field(default_factory=TinyModelSpec, description="Sizes of the tiny preset.")

    @model_validator(mode="before")
    @classmethod
    def _train_lm(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("train_lm") is None:
            # A random-init LM has nothing worth freezing: frozen, it is a fixed random projection.
            data = {**data, "train_lm": data.get("preset", "tiny") == "tiny"}
        return data

    @model_validator(mode="after")
    def _check(self) -> "ModelSpec":
        if self.item_codes is not None and self.item_ids != "semantic":
            raise ValueError(f"item_codes: only for item_ids semantic (got {self.item_ids})")
        custom_only = {"vision": self.vision, "vision_pretrained": self.vision_pretrained, "lm": self.lm,
                       "tokenizer": self.tokenizer}
        if self.preset == "custom":
            missing = [name for name in ("vision", "lm") if custom_only[name] is None]
            if missing:
                raise ValueError(f"preset custom needs {' and '.join(missing)} (e.g. --vision ViT-L-14 --lm PATH)")
            return self
        given = [name for name, value in custom_only.items() if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)}: only for --model custom (preset {self.preset} fixes them)")
        if self.preset == "tiny":
            if self.checkpoint is not None:
                raise ValueError("checkpoint: the tiny preset has random weights and takes no OpenFlamingo checkpoint")
        elif self.cross_attn_every_n_layers is not None:
            raise ValueError(f"cross_attn_every_n_layers: preset {self.preset} fixes it (its checkpoint depends on it)")
        return self

    def train_defaults(self) -> dict[str, dict[str, Any]]:
        # tiny starts from random weights and wants a larger step; the presets use the paper's 1e-4
        return {"optim": {"lr": 3e-3 if self.preset == "tiny" else 1e-4, "batch_size": 8}, "run": {"epochs": 1.0}}


