"""Importing the authors' PyTorch code from a directory the user gives (never copied here).

Shared by ``tools/make_goldens.py`` and ``tools/reference_animate.py``. Needs PyTorch (the
``convert`` extra: ``pip install -e .[convert]``).

TPSMM's keypoint detector and background predictor call ``torchvision.models.resnet18``. When
torchvision cannot be imported (here: the torchvision wheels on the package index fail to load
against the CPU build of torch 2.13 with "operator torchvision::nms does not exist"),
``import_reference`` installs a stand-in ``torchvision.models`` whose ``resnet18`` has
torchvision's module names (``conv1, bn1, layer1.0.conv1, layer2.0.downsample.0, fc``, ...),
forward (stem 7x7/2 conv, BN, ReLU, 3x3/2 max-pool, four stages of two basic blocks, average
pool, ``fc``) and initialisation (Kaiming-normal fan-out convs, BN weight 1 and bias 0), so the
authors' modules build, train and save the same state dicts as with torchvision. ``width``
(ours, for the reduced-width golden fixtures) scales the 64/128/256/512 channels.
"""
from __future__ import annotations

import importlib
import os
import sys
import types

import torch
from torch import nn

RESNET18_WIDTH = {"value": 1.0}   # set by width_scope; read by the stand-in's resnet18


class _BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, inplanes, planes, stride=1, downsample=None):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.relu = nn.ReLU(inplace=True)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.downsample = downsample

  def forward(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return self.relu(out + identity)


class _ResNet18(nn.Module):
  def __init__(self, num_classes=1000, width=1.0):
    super().__init__()
    widths = [max(1, int(round(c * width))) for c in (64, 128, 256, 512)]
    self.inplanes = widths[0]
    self.conv1 = nn.Conv2d(3, self.inplanes, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(self.inplanes)
    self.relu = nn.ReLU(inplace=True)
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    self.layer1 = self._make_layer(widths[0], 1)
    self.layer2 = self._make_layer(widths[1], 2)
    self.layer3 = self._make_layer(widths[2], 2)
    self.layer4 = self._make_layer(widths[3], 2)
    self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
    self.fc = nn.Linear(widths[3], num_classes)
    for m in self.modules():
      if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
      elif isinstance(m, nn.BatchNorm2d):
        nn.init.constant_(m.weight, 1)
        nn.init.constant_(m.bias, 0)

  def _make_layer(self, planes, stride):
    downsample = None
    if stride != 1 or self.inplanes != planes:
      downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False),
                                 nn.BatchNorm2d(planes))
    layers = [_BasicBlock(self.inplanes, planes, stride, downsample)]
    self.inplanes = planes
    layers.append(_BasicBlock(planes, planes))
    return nn.Sequential(*layers)

  def forward(self, x):
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
    return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(pretrained=False, **kwargs):
  if pretrained:
    raise ValueError("the torchvision stand-in has no pretrained weights")
  return _ResNet18(width=RESNET18_WIDTH["value"], **kwargs)


def _unavailable(name: str):
  def fail(*args, **kwargs):
    raise RuntimeError(f"torchvision.{name} is not in the stand-in (torchvision does not import)")
  return fail


def _install_torchvision_standin() -> bool:
  """True if the stand-in was installed (torchvision itself does not import)."""
  try:
    import torchvision  # pylint: disable=g-import-not-at-top,unused-import
    return False
  except Exception:  # pylint: disable=broad-except  (ImportError, or its RuntimeError on load)
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
      del sys.modules[name]
  tv = types.ModuleType("torchvision")
  tv.models = types.ModuleType("torchvision.models")
  tv.models.resnet18 = resnet18
  tv.transforms = types.ModuleType("torchvision.transforms")   # imported by MCNet's dataset code
  # MRFA's kp_detector imports IntermediateLayerGetter (for a TPS detector it does not build).
  tv.models.__path__ = []
  tv.models._utils = types.ModuleType("torchvision.models._utils")  # pylint: disable=protected-access
  tv.models._utils.IntermediateLayerGetter = _unavailable("IntermediateLayerGetter")  # pylint: disable=protected-access
  sys.modules["torchvision"] = tv
  sys.modules["torchvision.models"] = tv.models
  sys.modules["torchvision.models._utils"] = tv.models._utils  # pylint: disable=protected-access
  sys.modules["torchvision.transforms"] = tv.transforms
  return True


def install_timm_standin() -> bool:
  """MRFA imports ``timm.models.layers.weight_init.trunc_normal_`` only; PyTorch's
  ``nn.init.trunc_normal_`` is the same function (same arguments and absolute bounds). True if
  the stand-in was installed (timm itself does not import)."""
  try:
    from timm.models.layers import weight_init  # pylint: disable=g-import-not-at-top,unused-import
    return False
  except Exception:  # pylint: disable=broad-except
    pass
  names = ["timm", "timm.models", "timm.models.layers", "timm.models.layers.weight_init"]
  mods = {n: types.ModuleType(n) for n in names}
  mods["timm.models.layers.weight_init"].trunc_normal_ = nn.init.trunc_normal_
  mods["timm.models.layers"].trunc_normal_ = nn.init.trunc_normal_
  for parent, child in zip(names, names[1:]):
    setattr(mods[parent], child.rsplit(".", 1)[1], mods[child])
  sys.modules.update(mods)
  return True


def import_reference(reference_dir: str, module_names: list[str], *, narrow_resnet: bool = False
                     ) -> dict[str, types.ModuleType]:
  """The authors' modules ``module_names`` (e.g. ``'modules.dense_motion'``) from
  ``reference_dir``. ``narrow_resnet``: use the stand-in ResNet-18 even if torchvision imports
  (torchvision's ResNet-18 has no width parameter)."""
  if not os.path.isdir(reference_dir):
    raise SystemExit(f"error: --reference_dir={reference_dir} is not a directory; give a checkout "
                     "of the authors' repository")
  standin = _install_torchvision_standin()
  install_timm_standin()
  sys.path.insert(0, os.path.abspath(reference_dir))
  try:
    modules = {name: importlib.import_module(name) for name in module_names}
  except ImportError as e:
    raise SystemExit(f"error: --reference_dir={reference_dir}: {e}; is it the authors' "
                     "repository?") from None
  if narrow_resnet and not standin:
    for m in modules.values():
      if hasattr(m, "models") and hasattr(m.models, "resnet18"):
        m.models = types.SimpleNamespace(resnet18=resnet18)
  return modules


def numpy_state_dict(module: nn.Module) -> dict:
  """``{name: numpy array}`` copies of a module's state dict (not views: training updates the
  BatchNorm buffers in place)."""
  return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}
