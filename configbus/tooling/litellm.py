"""Convert a LiteLLM proxy config (its `config.yaml`) into a configbus document.

    conversion = convert(yaml.safe_load(text))
    conversion.document   # plain data, ready for `to_document` or a YAML file
    conversion.dropped    # every setting not carried over, as "path: why"

What is carried over:
- `model_list`: each entry is a deployment of the model its `model_name` names, on a
  provider built from its `litellm_params` (dialect from the `model` prefix or
  `custom_llm_provider`, `api_base`, `api_key`, `timeout`, `max_retries`, `extra_headers`,
  `organization`). Entries with the same connection share one provider; an entry with
  `rpm` / `tpm` gets a provider of its own carrying them as its fleet-wide `rate_limit`
  (LiteLLM counts them per deployment). `weight` is the deployment's weight.
- `api_key: os.environ/NAME` becomes `api_key_env: NAME`; a plaintext key a secret
  (`{secret: ...}`, encrypted by the admin before it is stored).
- `router_settings.fallbacks` / `litellm_settings.fallbacks` become the models' fallbacks;
  `num_retries` and `timeout` / `request_timeout` the providers' defaults.
- `general_settings.master_key` (plaintext) becomes a client holding its hash.
- `azure/<deployment>` entries become `azure` providers: `api_base` is the resource URL,
  `api_version` the provider's (when missing, `DEFAULT_AZURE_API_VERSION`, said in
  `dropped`), the deployment name the deployment's model.

Everything else is listed in `dropped`, one entry per setting, never silently ignored
(Azure AI Foundry's `azure_ai/` among them: another API than Azure OpenAI's).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from configbus.document import ENV_PATTERN, NAME_PATTERN

ENV_PREFIX = "os.environ/"
MAX_RETRIES, MAX_TIMEOUT_S = 10, 3600.0
DEFAULT_AZURE_API_VERSION = "2024-10-21"

# LiteLLM's provider prefix → (the document's provider type, default base URL; None: the
# entry must give `api_base`).
DIALECTS: dict[str, tuple[str, str | None]] = {
    "openai": ("openai", "https://api.openai.com/v1"),
    "anthropic": ("anthropic", "https://api.anthropic.com/v1"),
    "hosted_vllm": ("openai", None),
    "openai_like": ("openai", None),
    "groq": ("openai", "https://api.groq.com/openai/v1"),
    "together_ai": ("openai", "https://api.together.xyz/v1"),
    "openrouter": ("openai", "https://openrouter.ai/api/v1"),
    "xai": ("openai", "https://api.x.ai/v1"),
    "deepseek": ("openai", "https://api.deepseek.com/v1"),
    "mistral": ("openai", "https://api.mistral.ai/v1"),
    "fireworks_ai": ("openai", "https://api.fireworks.ai/inference/v1"),
    "ollama": ("openai", "http://localhost:11434/v1"),
    "ollama_chat": ("openai", "http://localhost:11434/v1"),
    "azure": ("azure", None),
}
# Keys of `litellm_params` the conversion reads (the rest are listed as dropped).
CARRIED_PARAMS = frozenset(
    {
        "model",
        "api_base",
        "base_url",
        "api_key",
        "custom_llm_provider",
        "weight",
        "rpm",
        "tpm",
        "timeout",
        "max_retries",
        "extra_headers",
        "organization",
        "api_version",
    }
)
_name_re = re.compile(NAME_PATTERN)
_env_re = re.compile(ENV_PATTERN)


@dataclass
class Conversion:
    """The document as plain data, and every setting not carried over (`path: why`)."""

    document: dict[str, Any]
    dropped: list[str] = field(default_factory=list)


class _Skip(Exception):
    """An entry that cannot be carried over; the message says why."""


def _env_name(value: Any) -> str | None:
    if isinstance(value, str) and value.startswith(ENV_PREFIX):
        return value[len(ENV_PREFIX) :]
    return None


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Skip(f"{where} is {value!r}, not a number")
    return float(value)


def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._:@+-]+", "-", text).strip("-._:@+")
    return slug or "provider"


class _Converter:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.dropped: list[str] = []
        self.providers: dict[str, dict[str, Any]] = {}  # name → provider
        self.shared: dict[str, str] = {}  # connection fingerprint → provider name
        self.models: dict[str, dict[str, Any]] = {}
        router = self.section("router_settings")
        litellm = self.section("litellm_settings")
        self.retries = router.get("num_retries", litellm.get("num_retries"))
        self.timeout = router.get("timeout", litellm.get("request_timeout"))

    def section(self, name: str) -> dict[str, Any]:
        value = self.config.get(name) or {}
        return value if isinstance(value, dict) else {}

    def drop(self, path: str, why: str) -> None:
        self.dropped.append(f"{path}: {why}")

    def run(self) -> Conversion:
        known = {"model_list", "router_settings", "litellm_settings", "general_settings"}
        for key in self.config:
            if key not in known:
                self.drop(str(key), "not carried over (no equivalent in the document)")
        entries = self.config.get("model_list") or []
        if not isinstance(entries, list):
            raise ValueError("model_list: expected a list of models")
        for i, entry in enumerate(entries):
            try:
                self.entry(i, entry)
            except _Skip as exc:
                self.drop(f"model_list[{i}]", f"not carried over: {exc}")
        self.settings()
        doc: dict[str, Any] = {
            "providers": list(self.providers.values()),
            "models": list(self.models.values()),
        }
        master = self.section("general_settings").get("master_key")
        if isinstance(master, str) and _env_name(master) is None:
            digest = hashlib.sha256(master.encode()).hexdigest()
            doc["clients"] = [{"name": "litellm-master-key", "key_sha256": digest}]
        elif master is not None:
            self.drop(
                "general_settings.master_key",
                "read from the environment: add a client with its sha256 by hand",
            )
        return Conversion(doc, self.dropped)

    def entry(self, i: int, entry: Any) -> None:
        where = f"model_list[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("litellm_params"), dict):
            raise _Skip("an entry needs model_name and litellm_params")
        name = entry.get("model_name")
        if not isinstance(name, str) or not _name_re.fullmatch(name) or len(name) > 128:
            raise _Skip(f"model_name {name!r} is not a model name here (no wildcards)")
        params: dict[str, Any] = entry["litellm_params"]
        model = params.get("model")
        if not isinstance(model, str) or not model:
            raise _Skip("litellm_params.model is missing")
        prefix, _, upstream_model = model.partition("/")
        if not upstream_model:  # a bare name: LiteLLM infers the provider
            prefix = "anthropic" if model.startswith("claude") else "openai"
            upstream_model = model
        prefix = params.get("custom_llm_provider") or prefix
        if prefix == "azure_ai":
            raise _Skip(f"{model!r}: Azure AI Foundry (configbus speaks Azure OpenAI: azure/)")
        if prefix not in DIALECTS:
            raise _Skip(f"{model!r}: provider {prefix!r} has no dialect in configbus")
        kind, default_base = DIALECTS[prefix]
        base = params.get("api_base") or params.get("base_url") or default_base
        if base is None:
            raise _Skip(f"{model!r}: {prefix} needs api_base")
        if _env_name(base) is not None:
            raise _Skip(f"api_base {base!r} is read from the environment: write the URL")
        if prefix.startswith("ollama") and not base.rstrip("/").endswith("/v1"):
            base = base.rstrip("/") + "/v1"  # Ollama's OpenAI-compatible API
        provider: dict[str, Any] = {"type": kind, "base_url": base}
        if kind == "azure":
            provider["base_url"] = base.rstrip("/")
            version = params.get("api_version")
            if version is None:
                version = DEFAULT_AZURE_API_VERSION
                self.drop(f"{where}.litellm_params.api_version",
                          f"not given: {version} assumed")  # fmt: skip
            elif _env_name(version) is not None:
                raise _Skip(f"api_version {version!r} is read from the environment: write it")
            provider["api_version"] = str(version)
        elif params.get("api_version") is not None:
            self.drop(f"{where}.litellm_params.api_version", "only Azure takes an api_version")
        key = params.get("api_key")
        if key is not None:
            env = _env_name(key)
            if env is None:
                provider["api_key"] = {"secret": str(key)}
            elif _env_re.fullmatch(env):
                provider["api_key_env"] = env
            else:
                raise _Skip(f"api_key names {env!r}, not an environment variable name")
        self.connection(provider, params)
        for k in params:
            if k not in CARRIED_PARAMS:
                self.drop(f"{where}.litellm_params.{k}", "not carried over")
        for k in entry:
            if k not in ("model_name", "litellm_params"):
                self.drop(f"{where}.{k}", "not carried over")
        limit = {
            k: int(_number(params[k], f"litellm_params.{k}"))
            for k in ("rpm", "tpm")
            if params.get(k) is not None
        }
        weight = params.get("weight", 1)
        w = round(_number(weight, "litellm_params.weight"))
        if w != weight:
            self.drop(f"{where}.litellm_params.weight", f"{weight!r} rounded to {w}")
        pname = self.provider_for(prefix, name, provider, limit)
        deployment = {"provider": pname, "model": upstream_model, "weight": w}
        found = self.models.setdefault(name, {"name": name, "deployments": []})
        found["deployments"].append(deployment)

    def connection(self, provider: dict[str, Any], params: dict[str, Any]) -> None:
        headers = params.get("extra_headers") or {}
        if not isinstance(headers, dict):
            raise _Skip("extra_headers is not a mapping")
        headers = {str(k): str(v) for k, v in headers.items()}
        if params.get("organization"):
            headers["OpenAI-Organization"] = str(params["organization"])
        if headers:
            provider["headers"] = headers
        timeout = params.get("timeout", self.timeout)
        if timeout is not None:
            provider["timeout_s"] = min(_number(timeout, "timeout"), MAX_TIMEOUT_S)
        retries = params.get("max_retries", self.retries)
        if retries is not None:
            provider["max_retries"] = min(int(_number(retries, "max_retries")), MAX_RETRIES)

    def provider_for(
        self, prefix: str, model: str, provider: dict[str, Any], limit: dict[str, int]
    ) -> str:
        """The provider's name: a shared one for the same connection, unless rate-limited."""
        fingerprint = repr(sorted(provider.items()))
        if not limit and fingerprint in self.shared:
            return self.shared[fingerprint]
        base = _slug(f"{prefix}-{model}" if limit else prefix)
        name, n = base, 1
        while name in self.providers:
            n += 1
            name = f"{base}-{n}"
        self.providers[name] = {"name": name, **provider}
        if limit:
            self.providers[name]["rate_limit"] = limit
        else:
            self.shared[fingerprint] = name
        return name

    def settings(self) -> None:
        router = self.section("router_settings")
        litellm = self.section("litellm_settings")
        for name in ("router_settings", "litellm_settings", "general_settings"):
            if not isinstance(self.config.get(name) or {}, dict):
                self.drop(name, "not a mapping")
        for section, values, carried in (
            ("router_settings", router, {"fallbacks", "num_retries", "timeout"}),
            ("litellm_settings", litellm, {"fallbacks", "num_retries", "request_timeout"}),
        ):
            for key, value in values.items():
                if key == "fallbacks":
                    self.fallbacks(f"{section}.fallbacks", value)
                elif key == "routing_strategy" and value == "simple-shuffle":
                    continue  # LiteLLM's default: pick by weight, as the document does
                elif key not in carried:
                    self.drop(f"{section}.{key}", "not carried over (no equivalent)")
        for key in self.section("general_settings"):
            if key != "master_key":
                self.drop(f"general_settings.{key}", "not carried over (no equivalent)")

    def fallbacks(self, path: str, value: Any) -> None:
        if not isinstance(value, list):
            self.drop(path, "not a list of {model: [fallbacks]}")
            return
        for j, rule in enumerate(value):
            if not isinstance(rule, dict):
                self.drop(f"{path}[{j}]", "not a {model: [fallbacks]} mapping")
                continue
            for model, targets in rule.items():
                if model not in self.models:
                    self.drop(f"{path}[{j}].{model}", "no such model was carried over")
                    continue
                names = targets if isinstance(targets, list) else [targets]
                kept = [t for t in names if t in self.models and t != model]
                for t in names:
                    if t not in kept:
                        self.drop(f"{path}[{j}].{model}: {t}", "no such model was carried over")
                current = self.models[model].setdefault("fallbacks", [])
                current.extend(t for t in kept if t not in current)


def convert(config: Any) -> Conversion:
    """`config` (a parsed LiteLLM config) as a configbus document; ValueError when it is not
    a LiteLLM config at all."""
    if not isinstance(config, dict):
        raise ValueError("a LiteLLM config is a mapping with a model_list")
    return _Converter(config).run()
