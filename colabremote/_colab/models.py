"""What Colab's control plane answers, as frozen dataclasses parsed tolerantly from wire JSON.

Colab spells one concept several ways (``variant`` is ``1``, ``"GPU"`` or ``"VARIANT_GPU"``
depending on the endpoint; ``SHAPE_HIGH_MEM`` vs ``SHAPE_HIGHMEM``), adds fields over time and
grows its accelerator list. So parsing accepts every documented spelling, ignores unknown fields,
and keeps accelerators as upper-cased strings. Secrets (proxy tokens) never appear in a repr.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import Enum, IntEnum
from typing import Any

from ..exceptions import ColabError, ConfigurationError

__all__ = [
    "HIGH_MEMORY_ONLY",
    "Accelerator",
    "AcceleratorGroup",
    "Assignment",
    "CcuInfo",
    "CredentialsPropagationResult",
    "MachineShape",
    "Outcome",
    "Runtime",
    "RuntimeProxyInfo",
    "RuntimeSpec",
    "SubscriptionState",
    "SubscriptionTier",
    "UserInfo",
    "Variant",
    "check_accelerator",
    "parse_duration",
]

DEFAULT_TOKEN_TTL = 3600.0
"""Seconds a proxy token is taken to live when Colab's TTL is missing or unparsable."""

HIGH_MEMORY_ONLY = frozenset({"L4", "V28", "V5E1", "V6E1"})
"""Accelerators with a single (high-memory) shape: assign never sends ``shape=hm`` for them."""


def _upper(value: object) -> str:
    return str(value).strip().upper()


class Variant(str, Enum):
    """The kind of machine: CPU only (``DEFAULT``), GPU or TPU."""

    DEFAULT = "DEFAULT"
    GPU = "GPU"
    TPU = "TPU"
    UNKNOWN = "UNKNOWN"
    """A value this version of colabremote does not know (seen in listings only)."""

    @classmethod
    def parse(cls, value: object) -> Variant:
        """Any wire spelling: ``0``-``2``, ``"GPU"``, ``"VARIANT_GPU"``, ``"VARIANT_CPU"``..."""
        if isinstance(value, cls):
            return value
        if isinstance(value, Enum):
            value = value.value
        if isinstance(value, bool):
            return cls.UNKNOWN
        if isinstance(value, int):
            return {0: cls.DEFAULT, 1: cls.GPU, 2: cls.TPU}.get(value, cls.UNKNOWN)
        if not isinstance(value, str):
            return cls.UNKNOWN
        text = _upper(value).removeprefix("VARIANT_")
        if text.isdigit():
            return cls.parse(int(text))
        if text in ("DEFAULT", "UNSPECIFIED", "CPU", "NONE", ""):
            return cls.DEFAULT
        return cls.__members__.get(text, cls.UNKNOWN)


class Accelerator(str, Enum):
    """Accelerator models seen in Colab (the service's list grows; strings work everywhere too)."""

    NONE = "NONE"
    T4 = "T4"
    L4 = "L4"
    G4 = "G4"
    A100 = "A100"
    V100 = "V100"
    H100 = "H100"
    V28 = "V28"
    V5E1 = "V5E1"
    V6E1 = "V6E1"

    @property
    def variant(self) -> Variant:
        """The machine kind this accelerator comes with."""
        if self is Accelerator.NONE:
            return Variant.DEFAULT
        if self in (Accelerator.V28, Accelerator.V5E1, Accelerator.V6E1):
            return Variant.TPU
        return Variant.GPU


def _models(variant: Variant) -> list[str]:
    return sorted(a.value for a in Accelerator if a.variant is variant)


def check_accelerator(gpu: str | None, tpu: str | None) -> tuple[str | None, str | None]:
    """``gpu=`` and ``tpu=`` upper-cased, each checked against the models Colab offers (in any
    case): a typo names the closest model, a model of the other kind names its option."""
    if gpu and tpu:
        raise ConfigurationError("ask for gpu= or tpu=, not both")
    option, name = ("gpu", gpu) if gpu else ("tpu", tpu)
    if not name:
        return None, None
    wanted = Variant.GPU if option == "gpu" else Variant.TPU
    model = name.strip().upper()
    known = _models(wanted)
    if model in known:
        return (model, None) if option == "gpu" else (None, model)
    listing = f"{wanted.value}s: {', '.join(known)}"
    if model in ("CPU", "NONE", "DEFAULT", ""):
        raise ConfigurationError(
            f"{option}={name!r} is not a {wanted.value}; for a CPU-only runtime leave out gpu= "
            f"and tpu= ({listing})"
        )
    if model in Accelerator.__members__:
        other = "tpu" if option == "gpu" else "gpu"
        raise ConfigurationError(
            f"{model} is a {Accelerator(model).variant.value}: ask for it with {other}={model!r}, "
            f"not {option}="
        )
    close = difflib.get_close_matches(model, known, n=1, cutoff=0.5)
    hint = f"did you mean {option}={close[0]!r}? " if close else ""
    other, others = ("tpu", Variant.TPU) if option == "gpu" else ("gpu", Variant.GPU)
    raise ConfigurationError(
        f"{option}={name!r} is not a Colab {wanted.value}; {hint}{listing} "
        f"(with {other}=: {', '.join(_models(others))})"
    )


class MachineShape(str, Enum):
    """How much memory the machine has: standard or high-memory ("High-RAM")."""

    STANDARD = "STANDARD"
    HIGH_MEM = "HIGH_MEM"
    VERY_HIGH_MEM = "VERY_HIGH_MEM"
    """Deprecated by Colab; kept so old listings parse."""
    UNKNOWN = "UNKNOWN"

    @classmethod
    def parse(cls, value: object) -> MachineShape:
        """Any wire spelling: ``0``, ``SHAPE_DEFAULT``, ``SHAPE_HIGH_MEM``, ``SHAPE_HIGHMEM``.

        Absent (``None``) means standard, as Colab's unspecified shape does.
        """
        if isinstance(value, cls):
            return value
        if value is None:
            return cls.STANDARD
        if isinstance(value, bool):
            return cls.UNKNOWN
        if isinstance(value, int):
            return {0: cls.STANDARD, 1: cls.HIGH_MEM, 2: cls.VERY_HIGH_MEM}.get(value, cls.UNKNOWN)
        if not isinstance(value, str):
            return cls.UNKNOWN
        text = _upper(value).removeprefix("SHAPE_").replace("_", "")
        if text.isdigit():
            return cls.parse(int(text))
        if text in ("", "UNSPECIFIED", "DEFAULT", "STANDARD"):
            return cls.STANDARD
        if text in ("HIGHMEM", "HIGHRAM", "HM"):
            return cls.HIGH_MEM
        if text == "VERYHIGHMEM":
            return cls.VERY_HIGH_MEM
        return cls.UNKNOWN


class SubscriptionTier(str, Enum):
    """The account's Colab plan."""

    UNSPECIFIED = "UNSPECIFIED"
    FREE = "FREE"
    PRO = "PRO"
    PRO_PLUS = "PRO_PLUS"

    @classmethod
    def parse(cls, value: object) -> SubscriptionTier:
        """``subTier`` ints (``0`` free, ``1`` Pro, ``2`` Pro+) or ``SUBSCRIPTION_TIER_*`` names."""
        if isinstance(value, cls):
            return value
        if isinstance(value, bool):
            return cls.UNSPECIFIED
        if isinstance(value, int):
            return {0: cls.FREE, 1: cls.PRO, 2: cls.PRO_PLUS}.get(value, cls.UNSPECIFIED)
        if not isinstance(value, str):
            return cls.UNSPECIFIED
        text = _upper(value).removeprefix("SUBSCRIPTION_TIER_")
        if text.isdigit():
            return cls.parse(int(text))
        if text in ("NONE", "FREE"):
            return cls.FREE
        if text in ("VERY_PRO", "PRO_PLUS", "PROPLUS"):
            return cls.PRO_PLUS
        return cls.__members__.get(text, cls.UNSPECIFIED)

    @property
    def is_paid(self) -> bool:
        """Pro or Pro+ (anything else is treated as the free tier)."""
        return self in (SubscriptionTier.PRO, SubscriptionTier.PRO_PLUS)


class SubscriptionState(IntEnum):
    """The ``sub`` field of an assignment: the state of the account's subscription."""

    UNKNOWN = 0
    UNSUBSCRIBED = 1
    RECURRING = 2
    NON_RECURRING = 3
    PENDING_ACTIVATION = 4
    DECLINED = 5

    @classmethod
    def parse(cls, value: object) -> SubscriptionState:
        """An int or a name; anything else is ``UNKNOWN``."""
        if isinstance(value, cls):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(value) if value in cls._value2member_map_ else cls.UNKNOWN
        if isinstance(value, str):
            text = _upper(value)
            if text.isdigit():
                return cls.parse(int(text))
            return cls.__members__.get(text, cls.UNKNOWN)
        return cls.UNKNOWN


class Outcome(IntEnum):
    """The ``outcome`` of an assign: success, or why Colab refused (with HTTP 200)."""

    UNDEFINED_OUTCOME = 0
    QUOTA_DENIED_REQUESTED_VARIANTS = 1
    QUOTA_EXCEEDED_USAGE_TIME = 2
    QUOTA_EXCEEDED_USAGE_TIME_REFUND_MIGHT_UNBLOCK = 3
    """Deprecated by Colab; read as a quota refusal."""
    SUCCESS = 4
    DENYLISTED = 5

    @classmethod
    def parse(cls, value: object) -> Outcome | None:
        """An int or a name; ``None`` when absent; a :class:`ColabError` when unknown."""
        if isinstance(value, cls):
            return value
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            if value in cls._value2member_map_:
                return cls(value)
        elif isinstance(value, str):
            text = _upper(value)
            if text.isdigit():
                return cls.parse(int(text))
            if text in cls.__members__:
                return cls.__members__[text]
        raise ColabError(f"Colab answered an assign with an unknown outcome {value!r}")

    @property
    def is_success(self) -> bool:
        """Whether the body is an assignment (``0`` and ``4`` both mean success)."""
        return self in (Outcome.UNDEFINED_OUTCOME, Outcome.SUCCESS)

    @property
    def is_quota(self) -> bool:
        """Whether Colab refused because usage limits are reached."""
        return self in (
            Outcome.QUOTA_DENIED_REQUESTED_VARIANTS,
            Outcome.QUOTA_EXCEEDED_USAGE_TIME,
            Outcome.QUOTA_EXCEEDED_USAGE_TIME_REFUND_MIGHT_UNBLOCK,
        )


_DURATION = re.compile(r"^\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*s\s*$")


def parse_duration(value: object, default: float = DEFAULT_TOKEN_TTL) -> float:
    """Seconds from a protobuf Duration (``"3600s"``, ``"3.5s"``) or a number.

    Missing, unparsable and non-positive values give ``default``, as Colab's own clients do.
    """
    seconds: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            seconds = float(match.group(1))
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        return default
    return seconds


def _parse_time(value: object) -> datetime | None:
    """An RFC 3339 timestamp (``...Z`` or with an offset, any fraction digits), in UTC."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("z", "Z")
    text = text[:-1] + "+00:00" if text.endswith("Z") else text
    match = re.match(r"^(.*T\d\d:\d\d:\d\d)(\.\d+)?(.*)$", text)
    if match:  # Python 3.10 accepts only 3 or 6 fraction digits
        fraction = (match.group(2) or "")[:7].ljust(7, "0") if match.group(2) else ""
        text = match.group(1) + fraction + match.group(3)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _number_or_none(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _require_mapping(data: object, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ColabError(f"Colab answered {what} with {type(data).__name__}, not a JSON object")
    return data


@dataclass(frozen=True)
class RuntimeProxyInfo:
    """How to reach a runtime's Jupyter server: the proxy ``url`` and its ``token``.

    ``expires_at`` (UTC) is when Colab stops accepting the token (about an hour after it is
    issued); ``None`` when Colab did not say. The token never appears in ``repr``/``str``.
    """

    url: str
    token: str = field(repr=False)
    expires_at: datetime | None = None

    def __repr__(self) -> str:
        expires = self.expires_at.isoformat() if self.expires_at else None
        return f"RuntimeProxyInfo(url={self.url!r}, token='***', expires_at={expires!r})"

    __str__ = __repr__

    @classmethod
    def from_wire(cls, data: object, *, now: datetime | None = None) -> RuntimeProxyInfo:
        """From ``runtimeProxyInfo`` (``tokenExpiresInSeconds`` or ``tokenTtl``) or v1beta's
        ``connectionInfo`` (``expireTime``)."""
        info = _require_mapping(data, "a runtime proxy record")
        url, token = info.get("url"), info.get("token")
        if not isinstance(url, str) or not url or not isinstance(token, str) or not token:
            raise ColabError("Colab answered a runtime proxy record without its url or token")
        now = now or _now()
        expires_at: datetime | None = None
        if "tokenExpiresInSeconds" in info:
            expires_at = now + timedelta(seconds=parse_duration(info["tokenExpiresInSeconds"]))
        elif "tokenTtl" in info:
            expires_at = now + timedelta(seconds=parse_duration(info["tokenTtl"]))
        elif "expireTime" in info:
            expires_at = _parse_time(info["expireTime"])
        return cls(url=url, token=token, expires_at=expires_at)

    def seconds_left(self, *, now: datetime | None = None) -> float | None:
        """Seconds until the token expires (negative once it has), or ``None`` if unknown."""
        if self.expires_at is None:
            return None
        return (self.expires_at - (now or _now())).total_seconds()

    def needs_refresh(self, *, margin: float = 300.0, now: datetime | None = None) -> bool:
        """Whether the token expires within ``margin`` seconds (or its expiry is unknown)."""
        left = self.seconds_left(now=now)
        return left is None or left <= margin


@dataclass(frozen=True)
class Assignment:
    """A Colab runtime (VM) assigned to the account, as assign or the assignment list reports it.

    ``endpoint`` names the VM in every later control-plane call; ``proxy`` is how to reach its
    Jupyter server. ``idle_timeout`` is Colab's ``fit`` (seconds) when given.
    """

    endpoint: str
    accelerator: str = "NONE"
    variant: Variant = Variant.DEFAULT
    machine_shape: MachineShape = MachineShape.STANDARD
    proxy: RuntimeProxyInfo | None = None
    runtime_version: str | None = None
    idle_timeout: float | None = None
    subscription_state: SubscriptionState | None = None
    subscription_tier: SubscriptionTier | None = None
    allowed_credentials: bool | None = None
    nbh: str | None = None

    @classmethod
    def from_wire(cls, data: object, *, now: datetime | None = None) -> Assignment:
        """From an assign answer (GET "already assigned" or POST) or an assignment list entry."""
        body = _require_mapping(data, "an assignment")
        endpoint = body.get("endpoint")
        if not isinstance(endpoint, str) or not endpoint:
            raise ColabError("Colab answered an assignment without an endpoint")
        accelerator = body.get("accelerator")
        proxy = body.get("runtimeProxyInfo")
        sub, sub_tier = body.get("sub"), body.get("subTier")
        allowed = body.get("allowedCredentials")
        return cls(
            endpoint=endpoint,
            accelerator=_upper(accelerator) if accelerator not in (None, "") else "NONE",
            variant=Variant.parse(body["variant"]) if "variant" in body else Variant.DEFAULT,
            machine_shape=MachineShape.parse(body.get("machineShape")),
            proxy=RuntimeProxyInfo.from_wire(proxy, now=now) if proxy is not None else None,
            runtime_version=_str_or_none(body.get("runtimeVersionLabel")),
            idle_timeout=_number_or_none(body.get("fit")),
            subscription_state=SubscriptionState.parse(sub) if sub is not None else None,
            subscription_tier=SubscriptionTier.parse(sub_tier) if sub_tier is not None else None,
            allowed_credentials=allowed if isinstance(allowed, bool) else None,
            nbh=_str_or_none(body.get("notebookIdHash")) or _str_or_none(body.get("nbh")),
        )

    @property
    def high_memory(self) -> bool:
        """Whether the VM has the high-memory shape."""
        return self.machine_shape in (MachineShape.HIGH_MEM, MachineShape.VERY_HIGH_MEM)


@dataclass(frozen=True)
class AcceleratorGroup:
    """The accelerator models of one variant (an entry of user-info's eligible/ineligible lists)."""

    variant: Variant
    models: tuple[str, ...] = ()

    @classmethod
    def from_wire(cls, data: object) -> AcceleratorGroup:
        """From ``{"variant": "VARIANT_GPU", "models": ["T4"]}`` (``models`` may be absent)."""
        body = _require_mapping(data, "an accelerator list")
        models = body.get("models") or []
        if not isinstance(models, list):
            raise ColabError("Colab answered an accelerator list whose models are not a list")
        return cls(Variant.parse(body.get("variant")), tuple(_upper(m) for m in models))


def _groups(body: Mapping[str, Any], key: str) -> tuple[AcceleratorGroup, ...]:
    items = body.get(key) or []
    if not isinstance(items, list):
        raise ColabError(f"Colab answered user info whose {key} is not a list")
    return tuple(AcceleratorGroup.from_wire(item) for item in items)


@dataclass(frozen=True)
class UserInfo:
    """The account's plan, compute-unit figures and which accelerators it may use.

    The consumption fields are set only when they were asked for (and Colab sent them).
    """

    subscription_tier: SubscriptionTier
    eligible_accelerators: tuple[AcceleratorGroup, ...] = ()
    ineligible_accelerators: tuple[AcceleratorGroup, ...] = ()
    paid_compute_units_balance: float | None = None
    consumption_rate_hourly: float | None = None
    assignments_count: int | None = None
    free_ccu_remaining_milli: int | None = None
    next_free_refill: datetime | None = None

    @classmethod
    def from_wire(cls, data: object) -> UserInfo:
        """From ``{GAPI}/v1/user-info`` (with or without the consumption fields)."""
        body = _require_mapping(data, "user info")
        count = _number_or_none(body.get("assignmentsCount"))
        quota = body.get("freeCcuQuotaInfo")
        remaining: int | None = None
        refill: datetime | None = None
        if isinstance(quota, Mapping):
            tokens = _number_or_none(quota.get("remainingTokens"))
            if tokens is not None and math.isfinite(tokens) and abs(tokens) < 2**53:
                remaining = int(tokens)
            refill_at = _number_or_none(quota.get("nextRefillTimestampSec"))
            if refill_at is not None and math.isfinite(refill_at):
                refill = datetime.fromtimestamp(refill_at, timezone.utc)
        return cls(
            subscription_tier=SubscriptionTier.parse(body.get("subscriptionTier")),
            eligible_accelerators=_groups(body, "eligibleAccelerators"),
            ineligible_accelerators=_groups(body, "ineligibleAccelerators"),
            paid_compute_units_balance=_number_or_none(body.get("paidComputeUnitsBalance")),
            consumption_rate_hourly=_number_or_none(body.get("consumptionRateHourly")),
            assignments_count=int(count) if count is not None else None,
            free_ccu_remaining_milli=remaining,
            next_free_refill=refill,
        )

    def eligible_models(self, variant: Variant) -> tuple[str, ...]:
        """The accelerator models of ``variant`` the account may use, in Colab's order."""
        seen: dict[str, None] = {}
        for group in self.eligible_accelerators:
            if group.variant is variant:
                seen.update(dict.fromkeys(group.models))
        return tuple(seen)


@dataclass(frozen=True)
class CcuInfo:
    """Compute units: the balance, the hourly burn across all runtimes, and runtimes counted."""

    current_balance: float
    consumption_rate_hourly: float
    assignments_count: int

    @classmethod
    def from_wire(cls, data: object) -> CcuInfo:
        """From ``{COLAB}/tun/m/ccu-info``; the three fields are required."""
        body = _require_mapping(data, "compute-unit info")
        balance = _number_or_none(body.get("currentBalance"))
        rate = _number_or_none(body.get("consumptionRateHourly"))
        count = _number_or_none(body.get("assignmentsCount"))
        if balance is None or rate is None or count is None:
            raise ColabError(
                "Colab answered compute-unit info without currentBalance, "
                "consumptionRateHourly or assignmentsCount"
            )
        return cls(
            current_balance=balance, consumption_rate_hourly=rate, assignments_count=int(count)
        )


@dataclass(frozen=True)
class CredentialsPropagationResult:
    """Whether credentials reached the VM, or the consent page to open when not authorized yet."""

    success: bool
    unauthorized_redirect_uri: str | None = None

    @classmethod
    def from_wire(cls, data: object) -> CredentialsPropagationResult:
        """From ``{"success": bool, "unauthorized_redirect_uri"?: str}``."""
        body = _require_mapping(data, "credentials propagation")
        return cls(
            success=body.get("success") is True,
            unauthorized_redirect_uri=_str_or_none(body.get("unauthorized_redirect_uri")),
        )


def _runtime_key(data: object) -> tuple[Variant, str, MachineShape]:
    key = data if isinstance(data, Mapping) else {}
    accelerator = key.get("accelerator")
    return (
        Variant.parse(key.get("variant")),
        _upper(accelerator) if accelerator not in (None, "") else "NONE",
        MachineShape.parse(key.get("shape")),
    )


@dataclass(frozen=True)
class RuntimeSpec:
    """A kind of runtime the v1beta API offers, and whether this account may create it."""

    variant: Variant
    accelerator: str
    shape: MachineShape
    eligible: bool = False

    @classmethod
    def from_wire(cls, data: object) -> RuntimeSpec:
        """From ``{"key": {"variant", "accelerator", "shape"}, "eligible": bool}``."""
        body = _require_mapping(data, "a runtime spec")
        variant, accelerator, shape = _runtime_key(body.get("key"))
        return cls(variant, accelerator, shape, eligible=body.get("eligible") is True)


@dataclass(frozen=True)
class Runtime:
    """A runtime of the v1beta API: its id, kind, and (once running) how to reach it.

    ``endpoint`` means the same VM as an :class:`Assignment`'s; ``proxy`` carries the token.
    """

    runtime_id: str
    variant: Variant
    accelerator: str
    shape: MachineShape
    version: str | None = None
    endpoint: str | None = None
    proxy: RuntimeProxyInfo | None = None

    @property
    def name(self) -> str:
        """The resource name, ``runtimes/{runtime_id}``."""
        return f"runtimes/{self.runtime_id}"

    @classmethod
    def from_wire(cls, data: object) -> Runtime:
        """From a v1beta ``Runtime`` (``connectionInfo`` may be absent while it starts)."""
        body = _require_mapping(data, "a runtime")
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise ColabError("Colab answered a runtime without a name")
        variant, accelerator, shape = _runtime_key(body.get("runtimeSpec"))
        info = body.get("connectionInfo")
        endpoint = _str_or_none(info.get("endpoint")) if isinstance(info, Mapping) else None
        return cls(
            runtime_id=name.removeprefix("runtimes/"),
            variant=variant,
            accelerator=accelerator,
            shape=shape,
            version=_str_or_none(body.get("version")),
            endpoint=endpoint,
            proxy=RuntimeProxyInfo.from_wire(info) if isinstance(info, Mapping) else None,
        )
