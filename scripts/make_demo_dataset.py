"""Write the bundled support-triage demo dataset (``arkor_trio/server/data/triage-demo.jsonl``).

Every conversation is a user describing a problem and an assistant answering with the ticket's
category on the first line (``billing``, ``bug``, ``account``, ``feature-request`` or
``outage``) and one next step on the second. The text comes from templates with seeded slot
fillers, so running the script again reproduces the file byte for byte::

    python scripts/make_demo_dataset.py            # rewrite the bundled file
    python scripts/make_demo_dataset.py --check    # exit 1 if the bundled file differs
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path

SEED = 20260523
COUNT = 360
OUT = Path(__file__).resolve().parents[1] / "arkor_trio" / "server" / "data" / "triage-demo.jsonl"
SYSTEM = "You triage support tickets. Reply with the category, then one next step."

SLOTS: dict[str, list[str]] = {
    "amount": ["$12", "$49", "$99", "$240", "$18.50", "$310", "$75"],
    "invoice": ["INV-1042", "INV-2291", "INV-3307", "INV-4816", "INV-5120", "INV-6634"],
    "plan": ["Starter", "Team", "Pro", "Business", "Enterprise"],
    "page": [
        "the dashboard",
        "the settings page",
        "the export dialog",
        "the search bar",
        "the billing page",
        "the editor",
        "the mobile app",
        "the reports tab",
    ],
    "action": [
        "click save",
        "upload a CSV",
        "switch tabs",
        "open a project",
        "rename a file",
        "resize the window",
        "press enter",
        "log out",
    ],
    "symptom": [
        "it freezes",
        "nothing happens",
        "it shows a blank screen",
        "the page crashes",
        "I get error 500",
        "the button stays grey",
        "my changes disappear",
    ],
    "feature": [
        "dark mode",
        "a CSV export",
        "SSO with Okta",
        "keyboard shortcuts",
        "a Slack integration",
        "bulk editing",
        "two-factor login by SMS",
        "an API for reports",
    ],
    "service": [
        "the API",
        "the web app",
        "login",
        "file uploads",
        "webhooks",
        "the sync service",
        "search",
        "email notifications",
    ],
    "since": ["10 minutes", "half an hour", "an hour", "this morning", "two hours", "noon"],
    "region": ["EU", "US-East", "US-West", "Asia", "our region"],
    "account_issue": [
        "I can't log in",
        "my password reset email never arrives",
        "I was locked out after too many attempts",
        "my 2FA codes stopped working",
        "I need to change the email on my account",
        "I want to delete my account",
        "I need to transfer ownership of our workspace",
    ],
    "name": ["Dana", "Omar", "Priya", "Lukas", "Mei", "Tom", "Ana", "Kofi", "Sara", "Ivan"],
}

USER: dict[str, list[str]] = {
    "billing": [
        "I was charged {amount} twice this month. Invoice {invoice} shows both.",
        "Why did my bill go up to {amount}? We are still on the {plan} plan.",
        "Please refund {amount}, I cancelled the {plan} plan before renewal.",
        "Invoice {invoice} has the wrong company name, can you fix it?",
        "My card was declined but you still charged {amount}.",
        "Hi, this is {name}. We were billed for the {plan} plan but we downgraded.",
    ],
    "bug": [
        "When I {action} on {page}, {symptom}.",
        "Since the last update {symptom} whenever I {action}.",
        "{page} is broken: {symptom} after I {action}.",
        "Hi, {name} here. Every time I {action} in {page}, {symptom}.",
        "Bug report: {symptom} on {page}.",
    ],
    "account": [
        "{account_issue}.",
        "Hello, {account_issue}. Can you help?",
        "This is {name}: {account_issue}.",
        "Urgent: {account_issue} and I have a deadline today.",
    ],
    "feature-request": [
        "Could you add {feature}? We would use it every day.",
        "It would be great to have {feature} in {page}.",
        "Feature idea: {feature}. Our team keeps asking for it.",
        "Hi, {name} here. Any plans for {feature}?",
        "We would upgrade to {plan} if you supported {feature}.",
    ],
    "outage": [
        "{service} has been down for {since}.",
        "Is {service} down? Nothing works for us in {region} since {since}.",
        "All requests to {service} time out for the last {since}.",
        "Hi, {name} here. {service} returns errors for everyone on our team.",
        "Status check: {service} is unreachable in {region}.",
    ],
}

ASSISTANT: dict[str, list[str]] = {
    "billing": [
        "Next step: refund the duplicate charge and confirm by email within 2 days.",
        "Next step: send the itemised invoice and review the plan change.",
        "Next step: open a billing review and reply with the corrected invoice.",
    ],
    "bug": [
        "Next step: collect the browser version and steps, then file it for engineering.",
        "Next step: ask for a screenshot and reproduce it on staging.",
        "Next step: attach the console log and escalate to the product team.",
    ],
    "account": [
        "Next step: verify identity and send a secure reset link.",
        "Next step: confirm ownership by email, then update the account.",
        "Next step: unlock the account after an identity check.",
    ],
    "feature-request": [
        "Next step: log the request on the roadmap board and thank the customer.",
        "Next step: add a vote to the existing request and share the public roadmap.",
        "Next step: record the use case and forward it to product.",
    ],
    "outage": [
        "Next step: check the status page, page the on-call engineer and reply with updates.",
        "Next step: confirm the incident, link the status page and follow up in 30 minutes.",
        "Next step: escalate to on-call now and post an incident update.",
    ],
}


def _fill(template: str, rng: random.Random) -> str:
    text = template.format(**{key: rng.choice(values) for key, values in SLOTS.items()})
    return re.sub(r"(^|[.?!] )([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)


def conversations(count: int = COUNT, seed: int = SEED) -> list[dict[str, object]]:
    """Return ``count`` conversations; the same ``seed`` always gives the same list."""
    rng = random.Random(seed)
    categories = sorted(USER)
    rows: list[dict[str, object]] = []
    for index in range(count):
        category = categories[index % len(categories)]
        messages = []
        if rng.random() < 0.5:
            messages.append({"role": "system", "content": SYSTEM})
        messages.append({"role": "user", "content": _fill(rng.choice(USER[category]), rng)})
        reply = f"{category}\n{rng.choice(ASSISTANT[category])}"
        messages.append({"role": "assistant", "content": reply})
        rows.append({"messages": messages})
    rng.shuffle(rows)
    return rows


def render() -> str:
    """The JSONL text of the demo dataset (one conversation per line, trailing newline)."""
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in conversations())


def main() -> int:
    """Write (or with ``--check`` compare) the bundled dataset; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    text = render()
    if args.check:
        same = OUT.exists() and OUT.read_text(encoding="utf-8") == text
        print(f"{OUT}: {'up to date' if same else 'differs'}")
        return 0 if same else 1
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT} ({len(text.encode())} bytes, {COUNT} conversations)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
