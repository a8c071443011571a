"""Spectrum: rank the weight matrices by signal-to-noise ratio, train the top fraction per layer type.

Spectrum (Hartford et al. 2024, arXiv:2406.06623; reference code cognitivecomputations/spectrum) treats a
weight matrix W (n x m) as signal plus random noise. By random-matrix theory (Marchenko–Pastur), the
singular values of an n x m noise matrix with entry scale sigma lie below

    eps = sigma * (1 + sqrt(beta)),   beta = min(n, m) / max(n, m)

and sigma is estimated robustly from the spread of W's own singular values, sigma = IQR(S) / 1.349 (the
IQR of a normal distribution is 1.349 standard deviations). Singular values above eps are signal:

    SNR(W) = (sum of S_i > eps) / (sum of S_i <= eps) / max(S)

(the reference divides by the largest singular value so that matrices of different scale compare). Matrices
are grouped by *layer type* — the module name after the layer index, e.g. `self_attn.q_proj`, `mlp.up_proj`
— and within each type the top `fraction` by SNR train (at least one per type), everything else is frozen.

What we do differently from the reference tool, on purpose: only 2-D weights of the repeated blocks are
ranked; embeddings, the output head and norms stay frozen (the reference's generated YAML also unfreezes
`embed_tokens` and `lm_head`, which on a 128k-vocabulary model is ~1B extra trainable parameters; the spec's
"fraction per layer type" does not ask for them). The scan is written to `spectrum_snr.json` in the output.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

_LAYER_INDEX = re.compile(r"\.(\d+)\.")


@dataclass(frozen=True)
class MatrixSnr:
    """One scanned weight matrix.

    Attributes:
        name: module name (`model.layers.3.self_attn.q_proj`); its parameter is `<name>.weight`.
        layer_type: the name after the layer index (`self_attn.q_proj`).
        shape: (out, in).
        snr: the Spectrum SNR (higher: more signal).
        selected: True when the matrix trains.
    """

    name: str
    layer_type: str
    shape: tuple[int, int]
    snr: float
    selected: bool = False


def layer_type(module_name: str) -> str | None:
    """`model.layers.3.self_attn.q_proj` -> `self_attn.q_proj`; None for modules outside numbered blocks."""
    m = _LAYER_INDEX.search(module_name + ".")
    if m is None:
        return None
    rest = (module_name + ".")[m.end():].rstrip(".")
    return rest or None


def marchenko_pastur_threshold(sigma: float, n: int, m: int) -> float:
    """Largest singular value expected of an n x m noise matrix with entry scale `sigma`."""
    beta = min(n, m) / max(n, m)
    return sigma * (1.0 + math.sqrt(beta))


def matrix_snr(weight) -> float:
    """Spectrum's SNR of one 2-D weight (computed in float32 on the weight's device).

    Args:
        weight: a 2-D tensor.

    Returns:
        signal / noise / max singular value; 0.0 for an all-zero matrix.
    """
    import torch

    s = torch.linalg.svdvals(weight.detach().float())
    if float(s[0]) == 0.0:
        return 0.0
    sigma = float(torch.quantile(s, 0.75) - torch.quantile(s, 0.25)) / 1.349
    eps = marchenko_pastur_threshold(sigma, *weight.shape)
    signal_mask = s > eps
    signal = float(s[signal_mask].sum()) if bool(signal_mask.any()) else 0.0
    noise = float(s[~signal_mask].sum()) if bool((~signal_mask).any()) else 1.0
    return signal / noise / float(s[0])


def candidate_matrices(model) -> list[tuple[str, object]]:
    """(module name, module) for every linear layer inside a numbered block, in model order."""
    import torch

    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and layer_type(n) is not None]


def select_top(scan: list[MatrixSnr], fraction: float) -> list[MatrixSnr]:
    """Mark the top `fraction` (by SNR, ties by name) of each layer type selected; at least one per type.

    Args:
        scan: matrices with their SNR.
        fraction: 0 < fraction <= 1.

    Returns:
        The same matrices in the same order, `selected` set.

    Raises:
        ValueError: fraction outside (0, 1].
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"spec.method.spectrum.fraction must be in (0, 1], got {fraction}")
    by_type: dict[str, list[MatrixSnr]] = {}
    for m in scan:
        by_type.setdefault(m.layer_type, []).append(m)
    chosen: set[str] = set()
    for group in by_type.values():
        k = max(1, math.floor(len(group) * fraction + 1e-9))
        ranked = sorted(group, key=lambda m: (-m.snr, m.name))
        chosen.update(m.name for m in ranked[:k])
    return [MatrixSnr(m.name, m.layer_type, m.shape, m.snr, m.name in chosen) for m in scan]


def scan_model(model, rank: int = 0, world: int = 1, all_sum=None) -> list[MatrixSnr]:
    """SNR of every candidate matrix; with several processes each computes a share and the sums are shared.

    Args:
        model: the (unwrapped, unsharded) base model.
        rank, world: this process's share is every `world`-th matrix from `rank`.
        all_sum: `list[float] -> list[float]` summing over ranks (required when world > 1).
    """
    cands = candidate_matrices(model)
    snrs = [matrix_snr(m.weight) if i % world == rank else 0.0 for i, (_, m) in enumerate(cands)]
    if world > 1:
        snrs = all_sum(snrs)
    return [MatrixSnr(n, layer_type(n), tuple(m.weight.shape), float(s)) for (n, m), s in zip(cands, snrs)]


def apply_spectrum(model, fraction: float, **scan_kw) -> list[MatrixSnr]:
    """Scan `model`, freeze every parameter, then unfreeze the weights (and biases) of the selected matrices.

    Returns:
        The scan with the selection (what `spectrum_snr.json` holds).
    """
    scan = select_top(scan_model(model, **scan_kw), fraction)
    for p in model.parameters():
        p.requires_grad_(False)
    modules = dict(model.named_modules())
    for m in scan:
        if m.selected:
            for p in modules[m.name].parameters():
                p.requires_grad_(True)
    return scan


def scan_report(scan: list[MatrixSnr], fraction: float) -> dict:
    """The JSON document saved as `spectrum_snr.json`: settings, per-type ranking and the selection."""
    types: dict[str, list[dict]] = {}
    for m in sorted(scan, key=lambda m: (m.layer_type, -m.snr, m.name)):
        types.setdefault(m.layer_type, []).append({k: v for k, v in asdict(m).items() if k != "layer_type"})
    return {"method": "spectrum", "fraction": fraction, "snr": "signal/noise/max singular value, "
            "Marchenko-Pastur threshold, sigma = IQR/1.349",
            "selected": [m.name for m in scan if m.selected], "layer_types": types}
