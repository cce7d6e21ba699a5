"""Recipe: evaluate every checkpoint while the run continues.

``on_checkpoint`` receives ``ctx.infer``, bound to that checkpoint's adapter. The recipe asks it
the same support tickets at every checkpoint (``await ctx.infer(...)``, one JSON completion) and
prints the answers, so you can watch the model learn; at the first checkpoint it also streams one
answer token by token (``async with ctx.infer.stream(...)``).

Callbacks run one at a time and the run does not wait for them, so evaluation delays later
callbacks, never the training. An inference error is caught and logged: a flaky evaluation should
not end ``wait()`` (an exception escaping a callback would). Run it:
``python examples/midrun_eval.py``.
"""

from __future__ import annotations

import attrs
from _recipe import MODEL, demo_dataset, run

from arkor_trio import ArkorClient, ArkorError, CheckpointContext, create_trainer

PROMPTS = (
    "I was charged twice for the Pro plan this month.",
    "The dashboard shows a blank page since this morning.",
)
SYSTEM = "You triage support tickets. Reply with the category, then one next step."


def ask(ticket: str) -> list[dict[str, str]]:
    """The chat messages for one ticket."""
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": ticket}]


@attrs.frozen
class Sample:
    """One answer of one checkpoint."""

    step: int
    prompt: str
    answer: str | None


@attrs.define
class Evaluator:
    """The ``on_checkpoint`` callback: collects :class:`Sample` s and one streamed answer."""

    max_tokens: int = 40
    samples: list[Sample] = attrs.field(factory=list)
    streamed: str | None = None
    errors: list[str] = attrs.field(factory=list)

    async def __call__(self, ctx: CheckpointContext) -> None:
        print(f"--- checkpoint at step {ctx.step} ({ctx.adapter.kind} of {ctx.adapter.job_id})")
        try:
            if self.streamed is None:
                pieces = []
                async with ctx.infer.stream(ask(PROMPTS[0]), max_tokens=self.max_tokens) as deltas:
                    async for text in deltas:
                        pieces.append(text)
                        print(text, end="", flush=True)
                print()
                self.streamed = "".join(pieces)
            for prompt in PROMPTS:
                answer = await ctx.infer(ask(prompt), max_tokens=self.max_tokens, temperature=0.2)
                self.samples.append(Sample(ctx.step, prompt, answer.text))
                print(f"{prompt!r} -> {answer.text!r}")
        except ArkorError as exc:  # log and go on: evaluation must not end the run's wait()
            self.errors.append(str(exc))
            print(f"evaluation at step {ctx.step} failed: {exc}")


async def main(client: ArkorClient, *, max_steps: int = 120, save_steps: int = 40) -> Evaluator:
    """Train, evaluating each checkpoint with a few prompts; return what was collected."""
    evaluator = Evaluator()
    trainer = create_trainer(
        name="midrun-eval",
        model=MODEL,
        dataset=demo_dataset(client),
        max_steps=max_steps,
        save_steps=save_steps,
        callbacks={"on_checkpoint": evaluator},
        client=client,
    )
    result = await trainer.wait()
    print(f"job {result.job.id} ended {result.job.status}")
    return evaluator


if __name__ == "__main__":
    run(main)
