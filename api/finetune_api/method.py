"""How the weights change (`spec.method`) and what loss drives them (`spec.objective`)."""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import Field, StringConstraints

from .base import SpecModel

ModuleName = Annotated[str, StringConstraints(min_length=1, max_length=253)]
MethodType = Literal["lora", "qlora", "full", "spectrum"]
ObjectiveType = Literal["sft", "cpt", "dpo", "orpo"]


class LoraSpec(SpecModel):
    """Low-rank adapters: W + (alpha / rank) * B @ A on the target modules, the base frozen."""

    rank: int = Field(16, ge=1, le=4096, description="Rank r of the adapter matrices A (r x in) and B (out x r).")
    alpha: float = Field(32.0, gt=0, le=65536, description="Scale numerator: the update is scaled by alpha / rank.")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout applied to the adapter's input.")
    target_modules: Union[Literal["all-linear"], Annotated[list[ModuleName], Field(min_length=1, max_length=256)]] = Field(
        "all-linear",
        description="Modules that get adapters: `all-linear` (every linear layer but the output head) or "
        "a list of module-name suffixes such as [q_proj, v_proj]. Names that match nothing are an error.",
    )
    use_dora: bool = Field(False, description="Weight-decomposed LoRA (DoRA): learn magnitude and direction.")


class SpectrumSpec(SpecModel):
    """Spectrum: train the weight matrices with the highest signal-to-noise ratio, freeze the rest."""

    fraction: float = Field(
        0.25, gt=0, le=1,
        description="Fraction of the matrices of each layer type (q_proj, mlp.up_proj, ...) to train, "
        "ranked by signal-to-noise ratio.",
    )


class MethodSpec(SpecModel):
    """Which parameters train: adapters (lora, qlora), all of them (full), or an SNR-chosen subset (spectrum)."""

    type: MethodType = Field(
        "lora",
        description="lora: adapters on a frozen base; qlora: adapters on a 4-bit NF4 base (GPU only); full: "
        "every parameter; spectrum: the top `spectrum.fraction` of matrices by signal-to-noise ratio.",
    )
    lora: Optional[LoraSpec] = Field(None, description="Adapter settings for `lora` and `qlora`.")
    spectrum: Optional[SpectrumSpec] = Field(None, description="Settings for `spectrum`.")

    @property
    def is_adapter(self) -> bool:
        """True for lora and qlora: adapters train, the base stays frozen (the output is a PEFT adapter)."""
        return self.type in ("lora", "qlora")

    @property
    def trains_base_weights(self) -> bool:
        """True for full and spectrum: the base model's own weights train (the output is full weights)."""
        return self.type in ("full", "spectrum")


class ObjectiveSpec(SpecModel):
    """The training objective."""

    type: ObjectiveType = Field(
        "sft",
        description="sft: next-token loss on answers only (prompts masked); cpt: continued pre-training on all "
        "tokens; dpo / orpo: preference optimisation on {prompt, chosen, rejected} data.",
    )
    beta: float = Field(
        0.1, gt=0, le=10, description="DPO temperature / ORPO odds-ratio weight. Ignored by sft and cpt."
    )

    @property
    def is_preference(self) -> bool:
        """True for dpo and orpo: trained on {prompt, chosen, rejected} pairs."""
        return self.type in ("dpo", "orpo")
