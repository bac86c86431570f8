"""optimum ONNX configs for CLIP/SigLIP towers exported as separate graphs.

optimum's CLI exports CLIP as one graph taking both modalities; ``export_models`` with these
per-tower configs writes a text graph and a vision graph, each with its projection.
"""

from __future__ import annotations

from typing import Any

from optimum.exporters.onnx.model_configs import (
    CLIPTextWithProjectionOnnxConfig,
    CLIPVisionModelOnnxConfig,
)

__all__ = ["tower_configs"]


class ClipTextTowerConfig(CLIPTextWithProjectionOnnxConfig):  # type: ignore[misc]
    """input_ids + attention_mask -> text_embeds (projected)."""

    @property
    def inputs(self) -> dict[str, dict[int, str]]:
        return {
            "input_ids": {0: "batch_size", 1: "sequence_length"},
            "attention_mask": {0: "batch_size", 1: "sequence_length"},
        }

    @property
    def outputs(self) -> dict[str, dict[int, str]]:
        return {"text_embeds": {0: "batch_size"}}


class ClipVisionTowerConfig(CLIPVisionModelOnnxConfig):  # type: ignore[misc]
    """pixel_values -> image_embeds (projected)."""

    @property
    def inputs(self) -> dict[str, dict[int, str]]:
        return {"pixel_values": {0: "batch_size"}}

    @property
    def outputs(self) -> dict[str, dict[int, str]]:
        return {"image_embeds": {0: "batch_size"}}


class SiglipTextTowerConfig(CLIPTextWithProjectionOnnxConfig):  # type: ignore[misc]
    """input_ids -> pooler_output (SigLIP pools the last token and projects in its head)."""

    @property
    def inputs(self) -> dict[str, dict[int, str]]:
        return {"input_ids": {0: "batch_size", 1: "sequence_length"}}

    @property
    def outputs(self) -> dict[str, dict[int, str]]:
        return {"pooler_output": {0: "batch_size"}}


class SiglipVisionTowerConfig(CLIPVisionModelOnnxConfig):  # type: ignore[misc]
    """pixel_values -> pooler_output (attention-pooling head)."""

    @property
    def inputs(self) -> dict[str, dict[int, str]]:
        return {"pixel_values": {0: "batch_size"}}

    @property
    def outputs(self) -> dict[str, dict[int, str]]:
        return {"pooler_output": {0: "batch_size"}}


def tower_configs(kind: str, config: Any) -> tuple[Any, Any, Any, Any, str, str]:
    """(text model, text ONNX config, vision model, vision ONNX config, outputs) for ``kind``.

    ``config`` is the checkpoint's ``CLIPConfig``/``SiglipConfig``; the models are built by
    the caller from the returned classes.
    """
    if kind == "clip":
        from transformers import CLIPTextModelWithProjection, CLIPVisionModelWithProjection

        return (
            CLIPTextModelWithProjection,
            ClipTextTowerConfig(config.text_config, task="feature-extraction"),
            CLIPVisionModelWithProjection,
            ClipVisionTowerConfig(config.vision_config, task="feature-extraction"),
            "text_embeds",
            "image_embeds",
        )
    from transformers import SiglipTextModel, SiglipVisionModel

    return (
        SiglipTextModel,
        SiglipTextTowerConfig(config.text_config, task="feature-extraction"),
        SiglipVisionModel,
        SiglipVisionTowerConfig(config.vision_config, task="feature-extraction"),
        "pooler_output",
        "pooler_output",
    )
