"""Single-label utterance classification: emotion recognition (ER) and action recognition (AR)."""

from avsuperb.probe.tasks.base import register
from avsuperb.probe.tasks.pooled import PooledTask


@register
class EmotionRecognition(PooledTask):
    name = "er"
    label = "emotion"
    label_kinds = ("class",)
    description = "emotion recognition, 4 classes (IEMOCAP: neu, hap+exc, ang, sad), accuracy %"


@register
class ActionRecognition(PooledTask):
    name = "ar"
    label = "action"
    label_kinds = ("class",)
    description = "action recognition (Kinetics-Sounds, UCF101), accuracy %"
