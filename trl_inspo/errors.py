# Copyright 2026 The trl-inspo authors. Licensed under the Apache License, Version 2.0.
"""The exceptions and the warning category of trl-inspo."""


class InSPOConfigError(ValueError):
    """An invalid InSPO option, or a combination of options that would make the InSPO computation wrong."""


class InSPODataError(ValueError):
    """A training or evaluation dataset that [`InSPOTrainer`] cannot use as given, or a row condition named in
    `InSPOConfig.strict_data`."""


class NonFiniteLossError(RuntimeError):
    """The training loss is NaN or infinite. Raised before the optimizer step, so the batch does not change the
    weights and no checkpoint is written with them."""


class TRLContractError(RuntimeError):
    """A TRL or transformers internal that trl-inspo relies on (listed in `docs/trl_internals.md`) did not behave as
    expected: the installed TRL changed it. The message names the entry."""


class InSPOWarning(UserWarning):
    """An option that has no effect in this configuration (it is ignored), or a value outside its documented range."""
