"""Single-label utterance classification: emotion recognition (ER) and action recognition (AR)."""

from avsuperb.probe.tasks.base import Task, register

register(
    Task(
        name="er",
        label="emotion",
        label_kinds=("class",),
        metric="accuracy",
        higher_is_better=True,
        description="emotion recognition, 4 classes (IEMOCAP: neu, hap+exc, ang, sad), accuracy %",
    )
)
register(
    Task(
        name="ar",
        label="action",
        label_kinds=("class",),
        metric="accuracy",
        higher_is_better=True,
        description="action recognition (Kinetics-Sounds, UCF101), accuracy %",
    )
)
