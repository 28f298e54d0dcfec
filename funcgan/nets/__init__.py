"""Networks as pure functions over explicit parameter dicts (see :mod:`funcgan.nets.functional`).

    params, buffers = nets.init_params(module, key)     # PyTorch's default init, from a key
    apply = nets.make_apply(module)                     # apply(params, buffers, *inputs, key=, train=)

Submodules: ``functional`` (init, apply, dict helpers), ``parametrize`` (spectral
and weight norm made functional), ``stochastic`` (keyed dropout), ``zoo`` (the
built-in systems' networks).
"""

from funcgan.nets import functional, parametrize, stochastic, zoo
from funcgan.nets.functional import (
    Apply,
    Buffers,
    Params,
    check_params,
    count_params,
    init_params,
    load_into_module,
    make_apply,
    make_skeleton,
    normal_init,
    params_from_module,
    to_state_dict,
)
from funcgan.nets.stochastic import KeyedDropout, keyed, set_forward_key
from funcgan.nets.zoo import (
    ConditionalDiscriminator,
    DCGANDiscriminator,
    DCGANGenerator,
    Seed000Discriminator,
    Seed000Generator,
    SNGANDiscriminator,
    SNGANGenerator,
    mlp,
)

__all__ = [
    "functional",
    "parametrize",
    "stochastic",
    "zoo",
    "Params",
    "Buffers",
    "Apply",
    "init_params",
    "make_apply",
    "make_skeleton",
    "params_from_module",
    "load_into_module",
    "check_params",
    "count_params",
    "to_state_dict",
    "normal_init",
    "KeyedDropout",
    "keyed",
    "set_forward_key",
    "mlp",
    "Seed000Generator",
    "Seed000Discriminator",
    "ConditionalDiscriminator",
    "DCGANGenerator",
    "DCGANDiscriminator",
    "SNGANGenerator",
    "SNGANDiscriminator",
]
