"""Every hostile case, by group (see :mod:`hostile_spec`)."""

from __future__ import annotations

import cases_audio
import cases_checkpoints
import cases_configs
import cases_dicom
import cases_exports
import cases_fit_inputs
import cases_geospatial
import cases_medical
import cases_outputs
from hostile_spec import Registry

REGISTRY = Registry()
for module in (
    cases_checkpoints,
    cases_exports,
    cases_configs,
    cases_fit_inputs,
    cases_medical,
    cases_dicom,
    cases_geospatial,
    cases_audio,
    cases_outputs,
):
    REGISTRY.extend(module.CASES)
