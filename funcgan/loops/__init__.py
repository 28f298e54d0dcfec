"""Update orders as values: every loop accepts every objective, penalty, network and condition.

=================  ======================================================================
``Alternating``    k D steps, then n G steps (seed 000; WGAN's n_critic; TTUR by learning rates)
``ReuseFake``      one G forward reused by D and G (the pytorch DCGAN example; seed 001 with
                   ``split=True``)
``Pix2Pix``        seed 002's conditional loop (BCE/L1 pix2pix)
``Adaptive``       seed 003's loop with its adaptive G schedule
``Simultaneous``   both players at the same point
``Extragradient``  extrapolate, then update with the extrapolated field
``Optimistic``     ``2 u_t - u_{t-1}``
``Consensus``      the field plus gamma times the gradient of its squared norm
``Unrolled``       G against D after k differentiable look-ahead updates
=================  ======================================================================

Write your own from :class:`Loop`, :class:`Context` and the primitives in
:mod:`funcgan.step` (see the README, "Write your own loop").
"""

from funcgan.loops.adaptive import Adaptive
from funcgan.loops.alternating import Alternating
from funcgan.loops.base import Context, Loop, batch_at, draw_disc_inputs, draw_gen_inputs
from funcgan.loops.reuse import Pix2Pix, ReuseFake
from funcgan.loops.simultaneous import Consensus, Extragradient, Optimistic, Simultaneous, joint_field
from funcgan.loops.unrolled import Unrolled

__all__ = [
    "Loop",
    "Context",
    "batch_at",
    "draw_disc_inputs",
    "draw_gen_inputs",
    "joint_field",
    "Alternating",
    "ReuseFake",
    "Pix2Pix",
    "Adaptive",
    "Simultaneous",
    "Extragradient",
    "Optimistic",
    "Consensus",
    "Unrolled",
    "LOOPS",
]

#: name -> loop class
LOOPS: dict[str, type[Loop]] = {
    c.name: c
    for c in (Alternating, ReuseFake, Pix2Pix, Adaptive, Simultaneous, Extragradient, Optimistic, Consensus, Unrolled)
}
