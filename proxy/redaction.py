"""Find personal data and secrets in free text and replace each with a typed placeholder.

What is found, and by what (the `redact` extra; pyproject.toml says why each):
- `[SECRET]`: API keys and tokens by the provider patterns of Yelp's detect-secrets (AWS, GitHub,
  GitLab, Slack, Stripe, OpenAI, PyPI, SendGrid, Twilio, ...), plus the formats it lacks (OpenAI
  project keys, Anthropic, Hugging Face, Google, JWTs, PEM private key blocks) and a value after
  a word such as `api_key=` or `password:`;
- `[EMAIL]`: addresses, by a regular expression (no library finds them in prose better);
- `[CARD]`: 13 to 19 digits, grouped or not, that pass the Luhn check (python-stdnum) and start
  like a card network's number, so an order number that happens to be Luhn-valid stays;
- `[PHONE]`: Google's libphonenumber (phonenumberslite) in `VALID` mode: numbers in international
  form anywhere, national forms of the configured regions, never a date or an amount;
- `[NAME]` for each custom pattern the operator names (`SPECLEARN_REDACT_PATTERNS`).

Detectors run in priority order (custom, secrets, e-mail, card, phone) on the text with what an
earlier one claimed masked out, so one span is one placeholder and offsets stay those of the input.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from .extras import MissingExtra

try:
    import phonenumbers
    from detect_secrets.plugins import (
        aws,
        azure_storage_key,
        basic_auth,
        discord,
        github_token,
        gitlab_token,
        mailchimp,
        openai,
        pypi_token,
        sendgrid,
        slack,
        square_oauth,
        stripe,
        telegram_token,
        twilio,
    )  # fmt: skip
    from stdnum import luhn
except ImportError as exc:  # depends on the install: one line naming the extra
    raise MissingExtra("redact", "SPECLEARN_LEDGER_CONTENT=redacted", str(exc)) from None

EMAIL, PHONE, CARD, SECRET = "EMAIL", "PHONE", "CARD", "SECRET"
KINDS = (EMAIL, PHONE, CARD, SECRET)
NAME_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,31}$")  # a custom placeholder's name
_MASK = " "

_EMAIL_RE = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9](?:[A-Za-z0-9._%+'-]{0,62}[A-Za-z0-9_%+-])?"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
)
# 13-19 digits, optionally grouped by single spaces or dashes, not inside a longer number
_CARD_RE = re.compile(r"(?<![\d.,-])\d(?:[ -]?\d){12,18}(?![\d-]|[.,]\d)")
# Issuer prefixes (IIN) of the networks people paste: Visa, Mastercard, Amex, Discover, Diners,
# JCB, UnionPay, Maestro
_CARD_PREFIX_RE = re.compile(r"^(?:4|5[1-5]|2[2-7]|3[47]|3[068]|35|6011|64[4-9]|65|62|5[06-8]|6[0-9])")

#: detect-secrets plugins whose patterns name a provider's own token format: precise in prose.
#: (Left out: its keyword, entropy and JWT detectors, written for lines of code and noisy in text.)
_DETECT_SECRETS = (
    aws.AWSKeyDetector, azure_storage_key.AzureStorageKeyDetector, basic_auth.BasicAuthDetector,
    discord.DiscordBotTokenDetector, github_token.GitHubTokenDetector, gitlab_token.GitLabTokenDetector,
    mailchimp.MailchimpDetector, openai.OpenAIDetector, pypi_token.PypiTokenDetector,
    sendgrid.SendGridDetector, slack.SlackDetector, square_oauth.SquareOAuthDetector,
    stripe.StripeDetector, telegram_token.TelegramBotTokenDetector, twilio.TwilioKeyDetector,
)  # fmt: skip
_MORE_SECRETS = (
    re.compile(
        r"(?<![\w-])sk-(?:proj-|svcacct-|admin-|ant-(?:api|admin)\d\d-)?[A-Za-z0-9_-]{20,}"
    ),  # OpenAI, Anthropic
    re.compile(r"(?<![\w-])(?:sk|rk|pk)_(?:live|test)_[0-9A-Za-z]{16,}"),  # Stripe, test keys too
    re.compile(r"(?<![\w-])github_pat_[A-Za-z0-9_]{22,}"),
    re.compile(r"(?<![\w-])hf_[A-Za-z0-9]{30,}"),
    re.compile(r"(?<![\w-])AIza[0-9A-Za-z_-]{35}"),
    re.compile(r"(?<![\w-])xai-[A-Za-z0-9]{40,}"),
    re.compile(r"(?<![\w-])eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{10,}"),  # a JWT, signature too
    re.compile(
        r"-----BEGIN [A-Z ]*PRIVATE KEY(?: BLOCK)?-----.*?(?:-----END [A-Z ]*PRIVATE KEY(?: BLOCK)?-----|\Z)", re.S
    ),
    # a value after a word that says it is a secret, and a separator (`:`, `=`, `is`; none after
    # `Bearer`): the value only is replaced. At least one digit or symbol in it, so "the password
    # is required" names no password.
    re.compile(
        r"(?i)(?:\bbearer\s+|\b(?:api[_ -]?key|apikey|access[_ -]?token|auth[_ -]?token|secret(?:[_ -]?key)?|"
        r"client[_ -]?secret|password|passwd|pass|pwd)\b[\"']?\s*(?::|=|\bis\b)\s*[\"']?)"
        r"(?P<secret>(?=[A-Za-z]*[0-9_\-./+=!@#$%^&*~])[A-Za-z0-9_\-./+=!@#$%^&*~]{8,})"
    ),
)


@dataclass(frozen=True, slots=True)
class Finding:
    """`text[start:end]` is a `kind` (EMAIL, PHONE, CARD, SECRET or a custom name)."""

    start: int
    end: int
    kind: str


Detector = Callable[[str], Iterable[tuple[int, int]]]


def _regex(pattern: re.Pattern[str]) -> Detector:
    """Spans of a pattern: its `secret` group, else its first group, else the whole match."""
    group: int | str = "secret" if "secret" in pattern.groupindex else (1 if pattern.groups else 0)

    def find(text: str) -> Iterator[tuple[int, int]]:
        for m in pattern.finditer(text):
            start, end = m.span(group)
            if start >= 0 and end > start:
                yield start, end

    return find


def _cards(text: str) -> Iterator[tuple[int, int]]:
    for m in _CARD_RE.finditer(text):
        digits = re.sub(r"[ -]", "", m.group())
        if 13 <= len(digits) <= 19 and _CARD_PREFIX_RE.match(digits) and luhn.is_valid(digits):
            yield m.span()


def _phones(regions: Sequence[str]) -> Detector:
    def find(text: str) -> Iterator[tuple[int, int]]:
        if sum(c.isdigit() for c in text) < 7:  # no phone number is shorter: skip the matcher
            return
        for region in regions:
            for m in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID):
                yield m.start, m.end

    return find


class Redactor:
    """Finds and replaces; built once from the settings, then used from the ledger's writer."""

    def __init__(self, custom: Mapping[str, str] | None = None, phone_regions: Sequence[str] = ("US",)) -> None:
        detectors: list[tuple[str, Detector]] = []
        for name, pattern in (custom or {}).items():
            if not NAME_RE.match(name):
                raise ValueError(f"custom pattern name {name!r}: use capitals, digits and _ (e.g. EMPLOYEE_ID)")
            detectors.append((name, _regex(re.compile(pattern))))
        secrets = [p for plugin in _DETECT_SECRETS for p in plugin.denylist] + list(_MORE_SECRETS)
        detectors += [(SECRET, _regex(p)) for p in secrets]
        detectors += [(EMAIL, _regex(_EMAIL_RE)), (CARD, _cards), (PHONE, _phones([r.upper() for r in phone_regions]))]
        self._detectors = detectors

    def find(self, text: str) -> list[Finding]:
        """Non-overlapping findings in order of position, an earlier detector winning a contested span."""
        found: list[Finding] = []
        masked = text
        for kind, detect in self._detectors:
            claimed = []
            for start, end in detect(masked):
                if not any(start < f.end and f.start < end for f in found):
                    found.append(Finding(start, end, kind))
                    claimed.append((start, end))
            for start, end in claimed:  # after the detector is done with this text
                masked = masked[:start] + _MASK * (end - start) + masked[end:]
        return sorted(found, key=lambda f: f.start)

    def redact(self, text: str) -> str:
        """`text` with each finding replaced by `[KIND]`."""
        if not text:
            return text
        findings = self.find(text)
        if not findings:
            return text
        out, at = [], 0
        for f in findings:
            out.append(text[at : f.start])
            out.append(f"[{f.kind}]")
            at = f.end
        out.append(text[at:])
        return "".join(out)


def read_patterns_file(text: str) -> dict[str, str]:
    """`NAME REGEX` per line (split at the first run of blanks); blank lines and `#` lines skipped."""
    patterns: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.strip().split(None, 1)
        if len(parts) != 2:
            raise ValueError(f"line {number}: expected `NAME REGEX`, got {line.strip()!r}")
        patterns[parts[0]] = parts[1]
    return patterns
