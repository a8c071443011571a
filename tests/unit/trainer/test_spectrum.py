"""Spectrum's SNR scan and selection: signal beats noise, top fraction per layer type, the rest frozen."""

import pytest
import torch

from finetune_trainer.spectrum import (MatrixSnr, apply_spectrum, layer_type, marchenko_pastur_threshold, matrix_snr,
                                       scan_report, select_top)


def test_layer_type_is_the_name_after_the_layer_index():
    assert layer_type("model.layers.3.self_attn.q_proj") == "self_attn.q_proj"
    assert layer_type("model.layers.12.mlp.down_proj") == "mlp.down_proj"
    assert layer_type("lm_head") is None and layer_type("model.embed_tokens") is None


def test_marchenko_pastur_edge():
    assert marchenko_pastur_threshold(1.0, 100, 100) == pytest.approx(2.0)
    assert marchenko_pastur_threshold(0.5, 100, 400) == pytest.approx(0.5 * 1.5)


def test_a_low_rank_signal_has_a_higher_snr_than_noise_of_the_same_spectral_norm():
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(128, 256, generator=g)
    signal = noise + 3.0 * torch.randn(128, 4, generator=g) @ torch.randn(4, 256, generator=g)
    unit = lambda w: w / torch.linalg.matrix_norm(w, 2)  # noqa: E731
    assert matrix_snr(unit(signal)) > 2 * matrix_snr(unit(noise))
    # as in the reference code, the ratio is divided by the largest singular value
    assert matrix_snr(2 * unit(noise)) == pytest.approx(matrix_snr(unit(noise)) / 2, rel=1e-4)
    assert matrix_snr(torch.zeros(8, 8)) == 0.0


def _scan(snrs: dict[str, float]) -> list[MatrixSnr]:
    return [MatrixSnr(n, layer_type(n), (4, 4), s) for n, s in snrs.items()]


def test_top_fraction_per_layer_type_at_least_one():
    scan = _scan({f"model.layers.{i}.self_attn.q_proj": s for i, s in enumerate([0.1, 0.9, 0.5, 0.3])}
                 | {f"model.layers.{i}.mlp.up_proj": s for i, s in enumerate([0.2, 0.1, 0.4, 0.8])})
    chosen = {m.name for m in select_top(scan, 0.5) if m.selected}
    assert chosen == {"model.layers.1.self_attn.q_proj", "model.layers.2.self_attn.q_proj",
                      "model.layers.3.mlp.up_proj", "model.layers.2.mlp.up_proj"}
    assert {m.name for m in select_top(scan, 0.1) if m.selected} == {"model.layers.1.self_attn.q_proj",
                                                                     "model.layers.3.mlp.up_proj"}


@pytest.mark.parametrize("fraction", [0.0, 1.5, -0.1])
def test_fraction_out_of_range_names_the_field(fraction):
    with pytest.raises(ValueError, match=r"spec.method.spectrum.fraction must be in \(0, 1\]"):
        select_top(_scan({"model.layers.0.mlp.up_proj": 1.0}), fraction)


def test_fraction_out_of_range_is_refused_by_the_spec():
    from finetune_api import SpecError, load_job_text

    text = """apiVersion: finetune.io/v1alpha1
kind: FineTuneJob
metadata: {name: t}
spec:
  model: {path: m}
  dataset: {paths: [d.jsonl], format: messages}
  method: {type: spectrum, spectrum: {fraction: 1.5}}
  output: {path: out}
"""
    with pytest.raises(SpecError, match="spec.method.spectrum.fraction"):
        load_job_text(text)


def test_apply_spectrum_freezes_all_but_the_selected_matrices(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    scan = apply_spectrum(model, 0.5)
    selected = {m.name + ".weight" for m in scan if m.selected}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == selected
    types = {m.layer_type for m in scan}
    assert len(types) == 7 and len(selected) == 7  # 2 layers x 50% = one of each of the 7 linear types
    report = scan_report(scan, 0.5)
    assert sorted(report["selected"]) == sorted(n[:-len(".weight")] for n in selected)
    assert set(report["layer_types"]) == types
