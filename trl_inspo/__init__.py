# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""InSPO (Intrinsic Self-reflective Preference Optimization) for Hugging Face TRL.

Swap `trl.DPOTrainer`/`trl.DPOConfig` for `InSPOTrainer`/`InSPOConfig`; everything else stays the same.
"""

__version__ = "0.1.0"

from .collator import DataCollatorForInSPO, inspo_segment_lengths
from .config import InSPOConfig
from .errors import InSPOConfigError, InSPODataError, InSPOWarning, NonFiniteLossError, TRLContractError
from .losses import LOSSES, InSPOLogps, combined_preference_loss, inspo_logps, logps_by_kind, preference_loss
from .trainer import InSPOTrainer


__all__ = [
    "DataCollatorForInSPO",
    "InSPOConfig",
    "InSPOConfigError",
    "InSPODataError",
    "InSPOLogps",
    "InSPOTrainer",
    "InSPOWarning",
    "LOSSES",
    "NonFiniteLossError",
    "TRLContractError",
    "combined_preference_loss",
    "inspo_logps",
    "logps_by_kind",
    "inspo_segment_lengths",
    "preference_loss",
]
