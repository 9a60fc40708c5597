"""One student pass for both loss terms: x, y^ and z of a row in one segment, x read once.

The SFT sequence (x then y^) and the KL sequence (x then z) share the prompt x. Laid out
as one segment [x, y^, z] under an attention mask in which z sees x and itself but not
y^, with position ids that restart z right after x, every hidden state is the one the two
separate sequences give (up to float rounding); the forward and backward over x run once
instead of twice, and the step makes one backward pass instead of two (issue 22).

Segments are packed into rows first-fit by decreasing length, a row holding at most the
longest segment (`pack_joint`), so the short rows of a batch fill the padding of the long
ones: each segment attends within itself only (the mask is block-diagonal), so packing
changes nothing but rounding. z's first token is predicted by x's last hidden state, as
y^'s first token is: the one position serves both heads. A padding position attends to
itself alone, so no attention row is empty (an empty row gives NaN, which would reach the
gradients through the attention's backward).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from raft_distill.teacher import Packed

if TYPE_CHECKING:  # run_setup builds the run; step.py asks this module which pass to use
    from raft_distill.data import Example
    from raft_distill.run_setup import FitRun


@dataclass
class JointPacked:
    """Packed rows of segments [x, y^, z], their mask and positions, and each head's
    predictors: `sft` indexes the y^ tokens, `kl` the z tokens (with `weight` 1/L_i and
    `first`), both in (row, column) of `input_ids`, in the examples' order."""

    input_ids: Tensor  # [R, W]
    attention_mask: Tensor  # [R, 1, W, W] bool, True = may attend
    position_ids: Tensor  # [R, W]
    sft: Packed
    kl: Packed


def place_segments(lengths: list[int]) -> tuple[list[tuple[int, int]], int]:
    """(row, start column) of each segment, first-fit by decreasing length into rows as
    wide as the longest segment; and that width."""
    width = max(lengths)
    free: list[int] = []  # columns used per row
    where: list[tuple[int, int]] = [(0, 0)] * len(lengths)
    for i in sorted(range(len(lengths)), key=lambda j: (-lengths[j], j)):
        row = next((r for r, used in enumerate(free) if used + lengths[i] <= width), len(free))
        if row == len(free):
            free.append(0)
        where[i] = (row, free[row])
        free[row] += lengths[i]
    return where, width


def _mask_segment(mask: Tensor, start: int, nx: int, ny: int, nz: int) -> None:
    """Causal over x and y^; z over x and causal over itself; never z over y^."""
    head = nx + ny
    tri = torch.ones((max(head, nz), max(head, nz)), dtype=torch.bool).tril()
    mask[start : start + head, start : start + head] = tri[:head, :head]
    zs = start + head
    mask[zs : zs + nz, start : start + nx] = True
    mask[zs : zs + nz, zs : zs + nz] = tri[:nz, :nz]


def _indices(entries: list[tuple[int, int, int, float, bool]]) -> Packed:
    """A `Packed` holding only predictor fields (row, column, target, weight, first)."""
    none = torch.zeros((0, 0), dtype=torch.long)
    return Packed(
        none,
        none,
        torch.tensor([e[0] for e in entries], dtype=torch.long),
        torch.tensor([e[1] for e in entries], dtype=torch.long),
        torch.tensor([e[2] for e in entries], dtype=torch.long),
        torch.tensor([e[3] for e in entries], dtype=torch.float32),
        torch.tensor([e[4] for e in entries], dtype=torch.bool),
    )


def pack_joint(
    prompts: list[list[int]], targets: list[list[int]], trajectories: list[list[int]], pad_id: int
) -> JointPacked:
    """Segments [x, y^, z] packed into rows, with the mask and positions that make each
    segment's z follow its x alone."""
    triples = list(zip(prompts, targets, trajectories, strict=True))
    where, width = place_segments([len(x) + len(y) + len(z) for x, y, z in triples])
    rows = 1 + max(r for r, _ in where)
    ids = torch.full((rows, width), pad_id, dtype=torch.long)
    mask = torch.zeros((rows, 1, width, width), dtype=torch.bool)
    positions = torch.zeros((rows, width), dtype=torch.long)
    sft: list[tuple[int, int, int, float, bool]] = []
    kl: list[tuple[int, int, int, float, bool]] = []
    for (x, y, z), (r, s) in zip(triples, where, strict=True):
        nx, ny, nz = len(x), len(y), len(z)
        ids[r, s : s + nx + ny + nz] = torch.tensor(x + y + z, dtype=torch.long)
        positions[r, s : s + nx + ny] = torch.arange(nx + ny)
        positions[r, s + nx + ny : s + nx + ny + nz] = torch.arange(nx, nx + nz)
        _mask_segment(mask[r, 0], s, nx, ny, nz)
        sft += [(r, s + nx - 1 + t, tok, 1.0, t == 0) for t, tok in enumerate(y)]
        z_at = [s + nx - 1] + [s + nx + ny + t for t in range(nz - 1)]
        kl += [(r, c, tok, 1.0 / nz, t == 0) for t, (c, tok) in enumerate(zip(z_at, z, strict=True))]
    empty = ~mask.any(dim=-1)  # padding: attends to itself
    mask |= torch.diag_embed(empty)
    return JointPacked(ids, mask, positions, _indices(sft), _indices(kl))


def joint_supported(config: Any, width: int) -> bool:
    """Whether one custom attention mask is right for every layer of this model: none
    attends over a sliding window narrower than the packed row (Gemma-2/3, Mistral-style
    configs); within the window a sliding layer sees what a full one sees."""
    window = getattr(config, "sliding_window", None)
    kinds = getattr(config, "layer_types", None) or []
    if kinds:
        sliding = any("sliding" in str(kind) for kind in kinds)
    else:
        sliding = window is not None and bool(getattr(config, "use_sliding_window", True))
    return not sliding or window is None or width <= int(window)


def use_joint_pass(run: FitRun, micro: list[list[Example]], z_all: list[list[int]]) -> bool:
    """One student pass for both terms (`joint_backward`): raft mode; `train.student_pass`
    joint, or auto on a CPU; lambda known before the backward (fixed, or the EMA with one
    micro-batch per process); every layer of the model sees a whole packed row."""
    setting = run.cfg.train.student_pass
    if not (run.use_sft and run.use_kl) or setting == "separate":
        return False
    if (setting == "auto" and run.device.type != "cpu") or (run.two_phase and len(micro) > 1):
        return False
    examples = [e for batch in micro for e in batch]
    longest = max(
        len(e.prompt_ids) + len(e.target_ids) + len(z) for e, z in zip(examples, z_all, strict=True)
    )
    return joint_supported(run.student_lm().config, longest)
