"""The int8 export's config (`tinycats export onnx --int8`): set when a model is quantised,
never part of a run's config. The defaults are the scheme chosen on training photos
(benchmarks/int8_schemes.py; figures in docs/benchmarks.md)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError

from tinycats.config.loading import format_validation_error
from tinycats.config.schema import Section
from tinycats.errors import ConfigError

KeepFloat = Literal["stem", "head"]
"""Layers that may stay float: the first convolution (sees raw pixels) and the final fc."""


class Int8Config(Section):
    """Static int8 quantisation of the classifier with onnxruntime (`quantize_static`)."""

    calibration_images: int = Field(
        128, ge=1, le=100_000, description="training photos to calibrate on, evenly spaced"
    )
    calibration_method: Literal["minmax", "entropy", "percentile"] = Field(
        "minmax", description="how activation ranges are chosen from the calibration photos"
    )
    per_channel: bool = Field(True, description="one weight scale per output channel")
    quant_format: Literal["qdq", "qoperator"] = Field(
        "qdq", description="QDQ (Quantize/DequantizeLinear pairs) or QLinear* operators"
    )
    activations: Literal["int8", "uint8"] = Field(
        "int8", description="activation type (onnxruntime advises uint8 with QOperator on x86)"
    )
    reduce_range: bool = Field(
        False, description="7-bit weights (for CPUs without VNNI, where 8 bits can saturate)"
    )
    keep_float: list[KeepFloat] = Field(
        default_factory=list, description="layers left in float: 'stem' (first conv), 'head' (fc)"
    )


def int8_config(**values: Any) -> Int8Config:
    """An `Int8Config` from command-line values; a bad one is a one-line `ConfigError`."""
    try:
        return Int8Config(**values)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None
