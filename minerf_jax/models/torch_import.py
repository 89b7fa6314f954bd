"""The authors' PyTorch state dicts -> our flax variables (numpy only; no PyTorch needed).

``launch.convert`` reads a released checkpoint with ``torch.load`` and hands its state dicts
here as ``{module: {tensor name: numpy array}}``; the golden-output tests hand the state dicts
saved in ``tests/data/`` fixtures. Each model has a table of its checkpoint's modules: which of
our submodules each becomes and how its tensor names translate.

TPSMM (``yoyo-nb/Thin-Plate-Spline-Motion-Model``; ``Logger.save_cpk`` writes
``{name: module.state_dict()}``): ``kp_detector`` -> ``detector``, ``bg_predictor`` ->
``bg_predictor``, ``dense_motion_network`` -> ``dense_motion``, ``inpainting_network`` ->
``generator``. Optimiser states and ``avd_network`` (the optional animation-via-disentanglement
network, not part of our model) are skipped and listed in the report. A checkpoint without
``bg_predictor`` (the reference's ``bg: False``, e.g. ``mgif-256``) keeps our predictor at its
initialisation, whose zero ``fc`` predicts the identity affine exactly: the same model.

Tensors: conv weights ``[O, I, kh, kw]`` -> ``kernel [kh, kw, I, O]``; linear ``[O, I]`` ->
``[I, O]``; norm ``weight`` -> ``scale``; BatchNorm ``running_mean`` / ``running_var`` -> the
``batch_stats`` collection's ``mean`` / ``var``; ``num_batches_tracked`` and the dense motion
network's fixed anti-aliasing kernel (``down.weight``, a buffer we compute) are dropped.
Channel orders need no permutation: our NHWC layers concatenate in the reference's channel
order (see ``motion/dense_motion.py``).

MCNet (``harlanhong/ICCV2023-MCNET``; ``Logger.save_cpk`` of DDP-wrapped modules: tensor names
may start with ``module.``, which is dropped as the authors' ``demo.py`` drops it):
``kp_detector`` -> ``detector`` (FOMM's hourglass detector), and ``generator``, split into its
``dense_motion_network`` -> ``dense_motion``, its memory unit ``mbUnit`` -> ``memory`` and the
rest -> ``generator`` (``MCNET_PARTS``). ``discriminator`` (unused: ``--generator_gan 0``) and the
optimiser states are skipped.

Every tensor must land: a checkpoint of another model, a tensor we do not know, one we need but
the checkpoint lacks, or a shape mismatch raises ``ConversionError`` with one line naming it.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

from minerf_jax.motion.mtia import sine_position_embedding

StateDicts = Mapping[str, Mapping[str, np.ndarray]]
Rule = tuple[str, Any]     # (regex on the dotted module path, replacement string or function)


class ConversionError(ValueError):
  """A state dict that does not convert; the message is one line naming the tensor."""


_RESNET = [(r"layer(\d)\.(\d)", r"layer\1_\2"), (r"downsample\.0", "downsample_conv"),
           (r"downsample\.1", "downsample_bn")]
_DENSE_MOTION = [(r"^hourglass\.encoder\.down_blocks\.(\d+)", r"hourglass.down\1"),
                 (r"^hourglass\.decoder\.up_blocks\.(\d+)", r"hourglass.up\1"),
                 (r"^up\.(\d+)", r"occlusion_up\1"), (r"^occlusion\.(\d+)", r"occlusion\1")]
_GENERATOR = [(r"^down_blocks\.(\d+)", r"down_blocks_\1"), (r"^up_blocks\.(\d+)", r"up_blocks_\1"),
              (r"^resblock\.(\d+)", lambda m: f"res_blocks_{int(m[1]) // 2}_{int(m[1]) % 2}")]

# FOMM's hourglass detector and dense motion network (MCNet's base; motion/fomm.py).
_FOMM_DETECTOR = [(r"^predictor\.encoder\.down_blocks\.(\d+)", r"predictor.down\1"),
                  (r"^predictor\.decoder\.up_blocks\.(\d+)", r"predictor.up\1")]
_FOMM_DENSE_MOTION = [(r"^hourglass\.encoder\.down_blocks\.(\d+)", r"hourglass.down\1"),
                      (r"^hourglass\.decoder\.up_blocks\.(\d+)", r"hourglass.up\1")]
FOMM_PARTS = {
    "kp_detector": ("detector", _FOMM_DETECTOR, ("down.weight",), False),
    "dense_motion_network": ("dense_motion", _FOMM_DENSE_MOTION, ("down.weight",), False),
}

def _memory_leaf(name: str, value: np.ndarray, entry: Mapping) -> tuple | None:
  """MCNet's ``ExpendMemoryUnit`` tensor -> ``motion/memory.py: MemoryCompensation``'s.

  Per-scale layers are named by the map's width in the reference (``feat_forward_proj_32``,
  ``conv_64``, ``norm_128``); ours by the scale's rank, coarsest first (``project0`` ...).
  """
  widths = sorted({int(m[1]) for k in entry if (m := re.match(r"feat_forward_proj_(\d+)\.", k))})
  rank = lambda w: widths.index(int(w))
  leaf = {"weight": "kernel", "bias": "bias"}
  if name == "mb":
    return "params", ("unit", "memory"), np.transpose(value, (0, 2, 3, 1))
  if m := re.fullmatch(r"(feat_forward_proj|conv)_(\d+)\.(weight|bias)", name):
    ours = {"feat_forward_proj": "project", "conv": "out"}[m[1]] + str(rank(m[2]))
    array = np.transpose(value, (2, 3, 1, 0)) if value.ndim == 4 else value
    return "params", (ours, leaf[m[3]]), array
  if m := re.fullmatch(r"norm_(\d+)\.(weight|bias)", name):
    return "params", (f"norm{rank(m[1])}", {"weight": "scale", "bias": "bias"}[m[2]]), value
  if m := re.fullmatch(r"(query_conv|diff_conv)\.(weight|bias)", name):
    array = np.transpose(value, (2, 3, 1, 0)) if value.ndim == 4 else value
    return "params", ("unit", m[1].split("_")[0], leaf[m[2]]), array
  if name == "conv_kv.weight":                                   # [K, O, I, k, k]
    return "params", ("unit", "key_value", "kernel"), np.transpose(value, (0, 3, 4, 2, 1))
  if name == "conv_kv.bias":
    return "params", ("unit", "key_value", "bias"), value
  if m := re.fullmatch(r"conv_kv\.attention\.(fc1|fc2)\.(weight|bias)", name):
    array = np.transpose(value[:, :, 0, 0]) if value.ndim == 4 else value
    return "params", ("unit", "key_value", f"attention_{m[1]}", leaf[m[2]]), array
  if m := re.fullmatch(r"style_route\.(0|2)\.(weight|bias)", name):
    array = value.T if value.ndim == 2 else value
    return "params", ("unit", f"identity_fc{1 if m[1] == '0' else 2}", leaf[m[2]]), array
  if name == "styleconv.modulated_conv.weight":                  # [1, O, I, k, k]
    return "params", ("unit", "memory_style", "kernel"), np.transpose(value[0], (2, 3, 1, 0))
  style = {
           "styleconv.modulated_conv.modulation.weight": ("modulation_kernel", (1, 0)),
           "styleconv.modulated_conv.modulation.bias": ("modulation_bias", None),
           "styleconv.weight": ("noise_strength", None),
           "styleconv.activate.bias": ("activation_bias", None)}
  if name in style:
    ours, perm = style[name]
    return "params", ("unit", "memory_style", ours), (value if perm is None
                                                      else np.transpose(value, perm))
  raise ConversionError(f"unknown memory tensor mbUnit.{name} {tuple(value.shape)}")


def split_entry(state_dicts: StateDicts, entry: str, prefixes: tuple[str, ...]) -> dict:
  """The state dicts with ``entry``'s tensors under each of ``prefixes`` (e.g. MCNet's
  ``generator.dense_motion_network.``) moved to their own entry ``'<entry>.<prefix>'``."""
  out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in state_dicts.items()
         if k != entry}
  rest = dict(state_dicts[entry])
  for prefix in prefixes:
    out[f"{entry}.{prefix}"] = {k[len(prefix) + 1:]: rest.pop(k) for k in list(rest)
                                if k.startswith(prefix + ".")}
  out[entry] = rest
  return out


# MCNet's checkpoint ('kp_detector', and 'generator' holding its dense motion network and memory
# unit, split off by split_entry(..., 'generator', MCNET_SPLIT)).
MCNET_SPLIT = ("dense_motion_network", "mbUnit")
MCNET_PARTS = {
    "kp_detector": ("detector", _FOMM_DETECTOR, ("down.weight",), False),
    "generator.dense_motion_network": ("dense_motion", _FOMM_DENSE_MOTION, ("down.weight",),
                                       False),
    "generator.mbUnit": ("memory", _memory_leaf, (), False),
    "generator": ("generator", _GENERATOR, (), False),
}

# MRFA's RaftFlow decoder (``motion/raft_flow.py``): its generator, structure hourglasses,
# update operator (``corr_enc`` + ``refine`` -> ``update``) and per-scale context projections.
_RAFT_FLOW = [(r"^generator\.down_blocks\.(\d+)", r"generator.down_blocks_\1"),
              (r"^generator\.up_blocks\.(\d+)", r"generator.up_blocks_\1"),
              (r"^generator\.resblock\.(\d+)", r"generator.res_blocks_\1"),
              (r"^generator\.channel_block\.(\d+)", r"generator.channel_blocks_\1"),
              (r"^(kp|kp_img)\.encoder\.down_blocks\.(\d+)", r"\1.hourglass.down\2"),
              (r"^(kp|kp_img)\.decoder\.up_blocks\.(\d+)", r"\1.hourglass.up\2"),
              (r"^kp_head$", "kp.head"), (r"^kp_img_head$", "kp_img.head"),
              (r"^corr_enc\.convc1$", "update.corr1"), (r"^corr_enc\.convc2$", "update.corr2"),
              (r"^corr_enc\.convf1$", "update.flow1"), (r"^corr_enc\.convf2$", "update.flow2"),
              (r"^corr_enc\.conv$", "update.motion"), (r"^refine\.convc1$", "update.context"),
              (r"^refine\.conv(\d)$", r"update.flow_head\1"),
              (r"^refine\.convo(\d)$", r"update.occlusion_head\1"),
              (r"^to_context\.(\d+)$", r"to_context\1")]


def _raft_flow_leaf(name: str, value: np.ndarray, entry: Mapping) -> tuple | None:
  """A RaftFlow tensor: the position embedding ``[1, K, h, w]`` -> ``[1, h, w, K]``; the rest
  by ``_RAFT_FLOW`` and the generic leaf rules."""
  del entry
  if name == "pos_embedding":
    return "params", ("pos_embedding",), np.transpose(value, (0, 2, 3, 1))
  module_path, _, leaf_name = name.rpartition(".")
  leaf = _leaf(leaf_name, value)
  if leaf is None:
    return None
  collection, ours, array = leaf
  return collection, (*_rename(module_path, _RAFT_FLOW).split("."), ours), array


# ---------------------------------------------------------------------------------- MRFA's MTIA
# MTIA keypoint detector (``motion/mtia.py``), the ``encoder`` of MRFA's checkpoint.
# MRFA's MTIA keypoint detector: the authors' state dict -> our ``motion/mtia.py`` variables.
#
# For ``torch_import.convert_table``: ``MTIA_PARTS`` maps the checkpoint entry ``encoder`` (the
# tensors of MRFA's ``self.encoder = get_pose_net(cfg.mtia_kp_detector)``, i.e. the names under
# ``encoder.`` in the ``model`` state dict that MRFA's ``Logger.save_cpk`` writes, with that
# prefix removed) to our submodule ``detector`` (``MTIAKeypointDetector``).
#
# Names (reference -> ours): ``pre_feature`` -> ``hrnet``; ``layer1.N`` -> ``layer1_N`` and a
# block's ``downsample.0/1`` -> ``downsample_conv/bn``; ``transitionT.i.{0,1}`` (same-resolution
# conv, BN) -> ``transitionT_i.{conv,bn}`` and ``transitionT.i.k.{0,1}`` (k-th stride-2 step of a
# new branch) -> ``transitionT_i_k.{conv,bn}``; ``stageS.m.branches.i.b`` ->
# ``stageS_m.branch{i}_{b}``; ``stageS.m.fuse_layers.i.j.{0,1}`` (upsampling path) ->
# ``stageS_m.fuse{i}_{j}.{conv,bn}`` and ``stageS.m.fuse_layers.i.j.k.{0,1}`` (k-th stride-2
# step) -> ``stageS_m.fuse{i}_{j}_{k}.{conv,bn}``; ``transformer.patch_to_embedding`` ->
# ``embed``; ``transformer.keypoint_token [1, 2K, dim]`` -> ``keypoint_tokens [2K, dim]``;
# transformer layer l's ``0.fn.norm`` / ``0.fn.fn.to_qkv`` / ``0.fn.fn.to_out.0`` / ``1.fn.norm``
# / ``1.fn.fn.net.0`` / ``1.fn.fn.net.3`` -> ``layer{l}.attention_norm`` / ``qkv`` /
# ``attention_out`` / ``mlp_norm`` / ``mlp_in`` / ``mlp_out``; ``mlp_head.{0,1}`` ->
# ``kp_head_norm`` / ``kp_head``; ``mlp_head_jacobian.{0,1}`` -> ``jacobian_head_norm`` /
# ``jacobian_head``. Tensors as in ``torch_import`` (conv ``[O, I, kh, kw]`` -> ``[kh, kw, I, O]``,
# linear transposed, norm ``weight`` -> ``scale``, running statistics -> ``batch_stats``).
#
# ``transformer.pos_embedding``, the fixed sine embedding (a ``requires_grad=False`` parameter in
# the reference, computed in ours), is dropped after checking that it is the embedding ours
# computes for some patch grid; any other (e.g. a learned one) raises ``ConversionError``.

_BN = lambda m: "conv" if m[m.lastindex] == "0" else "bn"
MTIA_RULES: list[Rule] = [
    (r"^pre_feature\.", "hrnet."),
    (r"\.layer1\.(\d+)", r".layer1_\1"),
    (r"\.downsample\.0$", ".downsample_conv"),
    (r"\.downsample\.1$", ".downsample_bn"),
    (r"\.transition(\d)\.(\d+)\.(\d+)\.([01])$", lambda m: f".transition{m[1]}_{m[2]}_{m[3]}."
     + _BN(m)),
    (r"\.transition(\d)\.(\d+)\.([01])$", lambda m: f".transition{m[1]}_{m[2]}." + _BN(m)),
    (r"\.stage(\d)\.(\d+)\.branches\.(\d+)\.(\d+)", r".stage\1_\2.branch\3_\4"),
    (r"\.stage(\d)\.(\d+)\.fuse_layers\.(\d+)\.(\d+)\.(\d+)\.([01])$",
     lambda m: f".stage{m[1]}_{m[2]}.fuse{m[3]}_{m[4]}_{m[5]}." + _BN(m)),
    (r"\.stage(\d)\.(\d+)\.fuse_layers\.(\d+)\.(\d+)\.([01])$",
     lambda m: f".stage{m[1]}_{m[2]}.fuse{m[3]}_{m[4]}." + _BN(m)),
    (r"^transformer\.patch_to_embedding$", "embed"),
    (r"^transformer\.transformer\.layers\.(\d+)\.0\.fn\.norm$", r"layer\1.attention_norm"),
    (r"^transformer\.transformer\.layers\.(\d+)\.0\.fn\.fn\.to_qkv$", r"layer\1.qkv"),
    (r"^transformer\.transformer\.layers\.(\d+)\.0\.fn\.fn\.to_out\.0$", r"layer\1.attention_out"),
    (r"^transformer\.transformer\.layers\.(\d+)\.1\.fn\.norm$", r"layer\1.mlp_norm"),
    (r"^transformer\.transformer\.layers\.(\d+)\.1\.fn\.fn\.net\.0$", r"layer\1.mlp_in"),
    (r"^transformer\.transformer\.layers\.(\d+)\.1\.fn\.fn\.net\.3$", r"layer\1.mlp_out"),
    (r"^transformer\.mlp_head\.0$", "kp_head_norm"),
    (r"^transformer\.mlp_head\.1$", "kp_head"),
    (r"^transformer\.mlp_head_jacobian\.0$", "jacobian_head_norm"),
    (r"^transformer\.mlp_head_jacobian\.1$", "jacobian_head"),
]


def is_sine_embedding(value: np.ndarray, atol: float = 1e-5) -> bool:
  """Whether ``value [1, N, dim]`` is ``sine_position_embedding`` of some ``h x w = N`` grid."""
  value = np.asarray(value)
  if value.ndim != 3 or value.shape[0] != 1 or value.shape[2] % 4:
    return False
  n, dim = value.shape[1:]
  return any(np.allclose(value[0], sine_position_embedding(h, n // h, dim), atol=atol, rtol=0)
             for h in range(1, n + 1) if n % h == 0)


def mtia_leaf(name: str, value: np.ndarray, entry: Mapping) -> tuple | None:
  """``(collection, path inside our detector, array)`` of a reference tensor, or None."""
  del entry
  if name == "transformer.pos_embedding":
    if not is_sine_embedding(value):
      raise ConversionError(
          f"tensor encoder.{name} {tuple(np.shape(value))} is not the fixed sine position "
          "embedding (POS_EMBEDDING_TYPE sine-full) that our MTIA detector computes")
    return None
  if name == "transformer.keypoint_token":
    return "params", ("keypoint_tokens",), np.asarray(value)[0]
  module_path, _, leaf_name = name.rpartition(".")
  leaf = _leaf(leaf_name, np.asarray(value))
  if leaf is None:
    return None
  collection, ours, array = leaf
  path = _rename(module_path, MTIA_RULES)
  if re.search(r"(^|\.)\d", path) or path.startswith(("pre_feature", "transformer")):
    raise ConversionError(f"tensor encoder.{name} {tuple(np.shape(value))} is not "
                                       "part of the MTIA detector (pose_tokenpose_b)")
  return collection, (*path.split("."), ours), array


# {checkpoint entry: (our submodule, translation, dropped tensor names, optional)}
MTIA_PARTS = {"encoder": ("detector", mtia_leaf, (), False)}

# MRFA's dense motion (FOMM's, with the occlusion logit) and decoder (``motion/raft_flow.py``).
MRFA_DECODER_PARTS = {
    "dense_motion": ("dense_motion", _FOMM_DENSE_MOTION, ("down.weight",), False),
    "decoder": ("refine", _raft_flow_leaf, (), False),
}

# model -> {checkpoint entry: (our submodule, rename rules, dropped tensor names, optional)}
MODULES: dict[str, dict[str, tuple[str, list[Rule], tuple[str, ...], bool]]] = {
    "tpsmm": {
        "kp_detector": ("detector", _RESNET, (), False),
        "bg_predictor": ("bg_predictor", _RESNET, (), True),
        "dense_motion_network": ("dense_motion", _DENSE_MOTION, ("down.weight",), False),
        "inpainting_network": ("generator", _GENERATOR, (), False),
    },
    "mcnet": MCNET_PARTS,
    "mrfa": {**MTIA_PARTS, **MRFA_DECODER_PARTS},   # the FOMM prior's: see mrfa_table
}
# Checkpoint entries that are not model weights (or not of a part we build).
SKIPPED = ("optimizer", "optimizer_bg_predictor", "avd_network", "optimizer_avd", "epoch",
           "scheduler", "discriminator", "optimizer_generator", "optimizer_discriminator",
           "optimizer_kp_detector", "mrfa_bg_predictor")
# MRFA's one ``model`` state dict: prefixes of the modules we build, and of those we do not (the
# frozen VGG19 of its loss, the image pyramid and anti-aliasing buffers).
MRFA_SPLIT = ("encoder", "dense_motion", "decoder", "bg_predictor")
MRFA_DROPPED = ("vgg.", "pyramid.", "down.")


def prepare(model: str, state_dicts: StateDicts) -> dict:
  """The checkpoint's state dicts in the layout of ``MODULES[model]``: MCNet's ``module.``
  prefixes dropped and its ``generator`` entry split (``split_entry``)."""
  if model not in ("mcnet", "mrfa"):
    return dict(state_dicts)
  out = {}
  for entry, tensors in state_dicts.items():
    if isinstance(tensors, Mapping) and entry not in SKIPPED:
      tensors = {(k[len("module."):] if k.startswith("module.") else k): v
                 for k, v in tensors.items()}
    out[entry] = tensors
  if model == "mcnet":
    return split_entry(out, "generator", MCNET_SPLIT) if "generator" in out else out
  if "model" not in out:
    return out
  out["model"] = {k: v for k, v in out["model"].items() if not k.startswith(MRFA_DROPPED)}
  out = split_entry(out, "model", MRFA_SPLIT)
  out = {k.replace("model.", "", 1) if k.startswith("model.") else k: v for k, v in out.items()}
  if out["model"]:
    name = next(iter(out["model"]))
    raise ConversionError(f"tensor model.{name} is not part of MRFA's encoder, dense_motion or "
                          "decoder: another model?")
  del out["model"]
  # MRFA's celebvhq model also trains a background predictor, which its demo never uses and we
  # do not build: skipped (and said so).
  background = out.pop("bg_predictor")
  if background:
    out["mrfa_bg_predictor"] = background
  return out


def mrfa_table(state_dicts: StateDicts) -> dict:
  """MRFA's conversion table for a prepared checkpoint: its ``encoder`` is MTIA (HRNet +
  TokenPose tensors) or, with ``prior_model: fomm``, FOMM's hourglass detector."""
  encoder = state_dicts.get("encoder", {})
  if any(k.startswith("predictor.") for k in encoder):
    return {"encoder": ("detector", _FOMM_DETECTOR, ("down.weight",), False),
            **MRFA_DECODER_PARTS}
  return MODULES["mrfa"]


def supported_models() -> tuple[str, ...]:
  return tuple(MODULES)


def _leaf(name: str, value: np.ndarray) -> tuple[str, str, np.ndarray] | None:
  """(collection, our leaf name, array) of a tensor, or None for a dropped buffer."""
  if name == "num_batches_tracked":
    return None
  if name == "weight":
    if value.ndim == 4:
      return "params", "kernel", np.transpose(value, (2, 3, 1, 0))
    if value.ndim == 2:
      return "params", "kernel", value.T
    return "params", "scale", value
  if name == "bias":
    return "params", "bias", value
  if name == "running_mean":
    return "batch_stats", "mean", value
  if name == "running_var":
    return "batch_stats", "var", value
  raise ConversionError(f"unknown tensor kind {name!r}")


def _rename(path: str, rules: list[Rule]) -> str:
  for pattern, replacement in rules:
    path = re.sub(pattern, replacement, path)
  return path


def _flatten(tree: Mapping, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out.update(_flatten(v, prefix + (k,)))
    else:
      out[prefix + (k,)] = v
  return out


def _unflatten(flat: Mapping[tuple[str, ...], Any]) -> dict:
  out: dict = {}
  for path, value in flat.items():
    node = out
    for k in path[:-1]:
      node = node.setdefault(k, {})
    node[path[-1]] = value
  return out


def convert(model: str, state_dicts: StateDicts, expected: Mapping,
            default: Mapping | None = None) -> tuple[dict, list[str]]:
  """``(variables, report)``: the state dicts as our ``{'params', 'batch_stats'}`` tree.

  Args:
    model: ``'tpsmm'`` (``supported_models()``).
    state_dicts: ``{checkpoint entry: {tensor name: array}}``; non-weight entries (``SKIPPED``)
      may be present.
    expected: our variables (arrays or ``ShapeDtypeStruct`` s) for the config: every leaf must be
      supplied with its shape, and is cast to its dtype.
    default: our initialised variables, used for an optional module the checkpoint lacks.
  Returns:
    the variables as numpy arrays, and lines saying what was skipped or defaulted.
  """
  if model not in MODULES:
    raise ConversionError(f"no converter for model {model!r}; supported: {supported_models()}")
  prepared = prepare(model, state_dicts)
  table = mrfa_table(prepared) if model == "mrfa" else MODULES[model]
  return convert_table(table, prepared, expected, default, model)


def convert_table(table: Mapping, state_dicts: StateDicts, expected: Mapping,
                  default: Mapping | None = None, model: str = "this model"
                  ) -> tuple[dict, list[str]]:
  """``convert`` with an explicit table ``{entry: (our submodule, rules, dropped, optional)}``
  (``MODULES[model]``, or a model's parts such as ``FOMM_PARTS``)."""
  report = []
  unknown = [k for k in state_dicts if k not in table and k not in SKIPPED]
  if unknown:
    raise ConversionError(f"checkpoint entry {unknown[0]!r} is not part of {model} (it holds "
                          f"{sorted(state_dicts)}; a {model} checkpoint has {sorted(table)}): "
                          "a checkpoint of another model?")
  report += [f"skipped {k!r} (not model weights we build)" for k in state_dicts if k in SKIPPED]
  want = {path: leaf for path, leaf in _flatten(expected).items()}
  got: dict[tuple[str, ...], np.ndarray] = {}
  source: dict[tuple[str, ...], str] = {}
  for entry, (ours, rules, dropped, optional) in table.items():
    if entry not in state_dicts:
      if not optional:
        raise ConversionError(f"checkpoint has no {entry!r} entry (it holds {sorted(state_dicts)})"
                              f": not a {model} checkpoint")
      if default is None:
        raise ConversionError(f"checkpoint has no {entry!r} entry and no default was given")
      for path, value in _flatten(default).items():
        if path[1] == ours:
          got[path] = np.asarray(value)
          source[path] = f"(initialisation of {ours})"
      report.append(f"{entry!r} absent: {ours} keeps its initialisation (the identity "
                    "background, as the reference's bg=False)")
      continue
    for name, value in state_dicts[entry].items():
      if name in dropped:
        continue
      if callable(rules):   # an explicit translation of this entry's names
        leaf = rules(name, np.asarray(value), state_dicts[entry])
        if leaf is None:
          continue
        collection, inner, array = leaf
        path = (collection, ours, *inner)
      else:
        module_path, _, leaf_name = name.rpartition(".")
        leaf = _leaf(leaf_name, np.asarray(value))
        if leaf is None:
          continue
        collection, leaf_ours, array = leaf
        path = (collection, ours, *_rename(module_path, rules).split("."), leaf_ours)
      if path not in want:
        raise ConversionError(f"tensor {entry}.{name} {tuple(np.shape(value))} has no place in "
                              f"our {model} (would be {'/'.join(path)}): another model or model "
                              "config?")
      target = tuple(want[path].shape)
      if tuple(array.shape) != target:
        raise ConversionError(f"tensor {entry}.{name} has shape {tuple(np.shape(value))} but our "
                              f"{'/'.join(path)} is {tuple(want[path].shape)} (as "
                              f"{tuple(array.shape)}): set the config to the checkpoint's sizes")
      got[path] = array
      source[path] = f"{entry}.{name}"
  missing = [p for p in want if p not in got]
  if missing:
    raise ConversionError(f"checkpoint lacks a tensor for our {'/'.join(missing[0])} "
                          f"{tuple(want[missing[0]].shape)} ({len(missing)} missing in all)")
  return _unflatten({p: np.asarray(got[p], dtype=want[p].dtype) for p in want}), report


def infer_tpsmm_sizes(state_dicts: StateDicts) -> dict[str, Any]:
  """The ``config.model`` fields a TPSMM checkpoint fixes, read from its tensor shapes.

  ``num_tps`` from the detector's ``fc``; generator ``block_expansion`` / ``num_down_blocks`` /
  ``max_features`` from its blocks; the dense motion hourglass' sizes and ``scale_factor`` (2 to
  minus the number of occlusion upsampling blocks) likewise. Keys are dotted ``config.model``
  fields for ``ConfigDict.update_from_flattened_dict``.
  """
  kp, gen, dm = (state_dicts[k] for k in ("kp_detector", "inpainting_network",
                                          "dense_motion_network"))
  count = lambda d, pattern: len({m[1] for k in d if (m := re.match(pattern, k))})
  downs = count(gen, r"^down_blocks\.(\d+)\.")
  hourglass = count(dm, r"^hourglass\.encoder\.down_blocks\.(\d+)\.")
  ups = count(dm, r"^up\.(\d+)\.")
  return {
      "num_tps": int(kp["fg_encoder.fc.bias"].shape[0] // 10),   # 5 points x (x, y) each
      "detector_width": float(kp["fg_encoder.conv1.weight"].shape[0] / 64),
      "generator.block_expansion": int(gen["first.conv.weight"].shape[0]),
      "generator.num_down_blocks": downs,
      "generator.max_features": int(gen[f"down_blocks.{downs - 1}.conv.weight"].shape[0]),
      "dense_motion.block_expansion": int(
          dm[f"hourglass.decoder.up_blocks.{hourglass - 1}.conv.weight"].shape[0]),
      "dense_motion.num_blocks": hourglass,
      "dense_motion.max_features": int(max(
          dm[f"hourglass.encoder.down_blocks.{i}.conv.weight"].shape[0]
          for i in range(hourglass))),
      "dense_motion.scale_factor": 2.0 ** -ups,
  }


_FOMM_SCALES = (1.0, 0.5, 0.25, 0.125, 0.0625)


def _antialias_scale(kernel: np.ndarray) -> float:
  """The ``scale_factor`` of FOMM's ``AntiAliasInterpolation2d`` from its kernel's size
  (``2 * round(4 sigma) + 1`` taps, ``sigma = (1 / scale - 1) / 2``)."""
  size = int(np.shape(kernel)[-1])
  for scale in _FOMM_SCALES[1:]:
    if 2 * round(4 * (1 / scale - 1) / 2) + 1 == size:
      return scale
  raise ConversionError(f"anti-aliasing kernel of {size} taps matches no scale in "
                        f"{_FOMM_SCALES[1:]}")


def _hourglass_sizes(tensors: Mapping, prefix: str) -> dict[str, Any]:
  """``block_expansion``, ``max_features``, ``num_blocks`` of a FOMM hourglass under ``prefix``."""
  count = len({m[1] for k in tensors
               if (m := re.match(rf"^{prefix}\.encoder\.down_blocks\.(\d+)\.", k))})
  return {
      "block_expansion": int(tensors[f"{prefix}.decoder.up_blocks.{count - 1}.conv.weight"]
                             .shape[0]),
      "max_features": int(max(tensors[f"{prefix}.encoder.down_blocks.{i}.conv.weight"].shape[0]
                              for i in range(count))),
      "num_blocks": count,
  }


def infer_sizes(model: str, state_dicts: StateDicts) -> dict[str, Any]:
  """The ``config.model`` fields a checkpoint of ``model`` fixes, read from its tensor shapes
  (dotted keys, for ``ConfigDict.update_from_flattened_dict``). A missing tensor raises
  ``KeyError``."""
  if model == "tpsmm":
    return infer_tpsmm_sizes(state_dicts)
  if model == "mrfa":
    return infer_mrfa_sizes(state_dicts)
  if model != "mcnet":
    raise ConversionError(f"no converter for model {model!r}; supported: {supported_models()}")
  parts = prepare(model, state_dicts)
  kp, gen, dm, mem = (parts[k] for k in ("kp_detector", "generator",
                                         "generator.dense_motion_network", "generator.mbUnit"))
  downs = len({m[1] for k in gen if (m := re.match(r"^down_blocks\.(\d+)\.", k))})
  sizes = {"num_kp": int(kp["kp.weight"].shape[0]),
           "kp_detector.scale_factor": _antialias_scale(kp["down.weight"]),
           "dense_motion.scale_factor": _antialias_scale(dm["down.weight"]),
           "generator.block_expansion": int(gen["first.conv.weight"].shape[0]),
           "generator.num_down_blocks": downs,
           "generator.max_features": int(gen[f"down_blocks.{downs - 1}.conv.weight"].shape[0]),
           "memory_bank.memory_channels": int(mem["mb"].shape[1]),
           "memory_bank.memory_size": int(mem["mb"].shape[2]),
           "memory_bank.style_hidden": int(mem["style_route.0.weight"].shape[0]),
           "memory_bank.style_features": int(mem["style_route.2.weight"].shape[0])}
  sizes.update({f"kp_detector.{k}": v for k, v in _hourglass_sizes(kp, "predictor").items()})
  sizes.update({f"dense_motion.{k}": v for k, v in _hourglass_sizes(dm, "hourglass").items()})
  return sizes


def infer_mrfa_sizes(state_dicts: StateDicts) -> dict[str, Any]:
  """MRFA's ``config.model`` fields from its checkpoint: ``prior`` (``mtia`` or ``fomm``, from
  the encoder's tensors), keypoints, the FOMM detector's or MTIA's transformer sizes (the HRNet
  widths and the head count are not readable from the tensors: the config's are kept), the dense
  motion hourglass, the generator, the structure encoders and the update operator's widths."""
  parts = prepare("mrfa", state_dicts)
  enc, dm, dec = (parts[k] for k in ("encoder", "dense_motion", "decoder"))
  downs = len({m[1] for k in dec if (m := re.match(r"^generator\.down_blocks\.(\d+)\.", k))})
  width = lambda name: int(dec[name].shape[0])
  sizes = {"num_kp": int(dm["mask.weight"].shape[0]) - 1,
           "dense_motion.scale_factor": _antialias_scale(dm["down.weight"]),
           "generator.block_expansion": width("generator.first.conv.weight"),
           "generator.num_up_blocks": downs,
           "generator.max_features": width(f"generator.down_blocks.{downs - 1}.conv.weight"),
           "refine.dim": width("kp_head.weight"),
           "refine.context_features": width("to_context.0.weight"),
           "refine.corr_features": (width("corr_enc.convc1.weight"),
                                    width("corr_enc.convc2.weight")),
           "refine.flow_features": (width("corr_enc.convf1.weight"),
                                    width("corr_enc.convf2.weight")),
           "refine.motion_features": width("corr_enc.conv.weight") + 2,
           "refine.hidden": width("refine.convc1.weight")}
  sizes.update({f"dense_motion.{k}": v for k, v in _hourglass_sizes(dm, "hourglass").items()})
  sizes.update({f"refine.encoder_{k}": v for k, v in _hourglass_sizes(dec, "kp").items()})
  if any(k.startswith("predictor.") for k in enc):
    sizes.update(prior="fomm", **{"kp_detector.scale_factor": _antialias_scale(enc["down.weight"]),
                                  "kp_detector.single_jacobian_map":
                                      int(enc["jacobian.weight"].shape[0]) == 4})
    sizes.update({f"kp_detector.{k}": v for k, v in _hourglass_sizes(enc, "predictor").items()})
  else:
    layers = {int(m[1]) for k in enc
              if (m := re.match(r"^transformer\.transformer\.layers\.(\d+)\.", k))}
    sizes.update({"prior": "mtia",
                  "kp_detector.dim": int(enc["transformer.patch_to_embedding.weight"].shape[0]),
                  "kp_detector.depth": len(layers)})
  return sizes


def summary(variables: Mapping) -> str:
  """``'N arrays, M parameters'`` of converted variables."""
  flat = _flatten(variables)
  n = sum(int(np.prod(np.shape(v))) for k, v in flat.items() if k[0] == "params")
  return f"{len(flat)} arrays, {n:,} parameters"
