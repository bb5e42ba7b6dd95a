"""Profile ``normalized``: alias rules as data, and an ephemeral port range per operating system.

Profile ``kql`` reproduces the seed query's ``AliasPath`` with its quirks (see ``aliasing``).
This profile fixes them with rules read from ``conf/aliases.yaml``: an ordered list of
``{name, description, pattern, replacement, example: {input, output}}``. A path is lower-cased,
then each rule's pattern is replaced in turn; ``compile_aliases`` nests the rules into one
Column expression (``regexp_replace`` over literals, evaluated in the JVM, no Python UDF).

Rules are checked when loaded (``load_alias_rules``): every key present and a string, names
unique, patterns in the subset of regular expressions that Java (Spark) and Python read the
same way, group references that exist, and each example right and actually changed by its
rule. ``normalize_path`` is the same normalisation in pure Python, used for those checks and
for explaining an alias (``explain``).

The ephemeral range depends on the OS: Linux starts it at 32768, Windows and macOS at 49152.
``ephemeral_start_expr`` picks the start per row, from an OS column when one is given and
otherwise from the path's style (``os_family_expr``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pyspark.sql import Column
from pyspark.sql import functions as F

from fwpolicy.config import ConfigError, PolicyConfig
from fwpolicy.query.kql import ColumnOrName, _col

RULE_KEYS = ("name", "description", "pattern", "replacement", "example")
EXAMPLE_KEYS = ("input", "output")
_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_GROUP_REF = re.compile(r"\$([0-9])")
_QUANTIFIER_BRACE = re.compile(r"\{[0-9]+(?:,[0-9]*)?\}")
MAX_GROUPS = 9  # $1..$9: a longer reference would read differently in Java and Python

LINUX, MACOS, WINDOWS, UNKNOWN = "linux", "macos", "windows", "unknown"
# Unambiguous macOS locations, for paths that start with '/'. /usr/... and /opt/... exist on both
# Linux and macOS; they count as Linux, because a Linux client port read as macOS's is dropped.
MACOS_PATH = (
    r"(?i)^/(?:applications|system|library|users|private|volumes|cores)/|^/opt/homebrew/|\.app/contents/"
)


class AliasRulesError(ConfigError):
    """An alias-rules file that fwpolicy cannot use; the message names the file, rule and reason."""


@dataclass(frozen=True)
class AliasRule:
    """One rewrite of a lower-cased path. ``replacement`` is literal text with ``$0``..``$9``."""

    name: str
    description: str
    pattern: str
    replacement: str
    example_input: str
    example_output: str

    @property
    def java_pattern(self) -> str:
        # UNICODE_CASE so that Java ignores case as Python's re.IGNORECASE does on str.
        return "(?iu)" + self.pattern

    @property
    def java_replacement(self) -> str:
        """For ``Matcher.appendReplacement``: ``\\`` and ``$`` escaped, group references kept."""
        return _convert_replacement(
            self.replacement, lambda g: "$" + g, lambda s: re.sub(r"([\\$])", r"\\\1", s)
        )

    @property
    def python_replacement(self) -> str:
        """For ``re.sub``: ``\\`` escaped, ``$n`` as ``\\g<n>``."""
        return _convert_replacement(
            self.replacement, lambda g: rf"\g<{g}>", lambda s: s.replace("\\", "\\\\")
        )

    @functools.cached_property
    def regex(self) -> re.Pattern[str]:
        return re.compile(self.pattern, re.IGNORECASE)

    def apply(self, text: str) -> str:
        """This rule on one string, in Python (the reference for the Spark expression)."""
        return self.regex.sub(self.python_replacement, text)


def _convert_replacement(text: str, group: Callable[[str], str], literal: Callable[[str], str]) -> str:
    out, pos = [], 0
    for m in _GROUP_REF.finditer(text):
        out += [literal(text[pos : m.start()]), group(m.group(1))]
        pos = m.end()
    out.append(literal(text[pos:]))
    return "".join(out)


# --- Portability: the regular expressions Java and Python read the same way ----------------

_ESCAPE_PROBLEMS = {
    **dict.fromkeys(
        "dDwWsSbB", "is Unicode-aware in Python and ASCII-only in Java; write a class such as [0-9]"
    ),
    **dict.fromkeys("zZG", "anchors differ between Java and Python; use ^ and $"),
    **dict.fromkeys("hHvVRX", "is a Java class that Python reads differently or not at all"),
    **dict.fromkeys("QE", "quoting (\\Q..\\E) is Java-only; escape each character instead"),
    **dict.fromkeys("pPk", "is not supported by Python's re"),
}


def portability_problem(pattern: str) -> str | None:
    """Why ``pattern`` might match differently in Java (Spark) and Python, or None."""
    i, n, in_class = 0, len(pattern), False
    while i < n:
        c = pattern[i]
        if c == "\\":
            nxt = pattern[i + 1 : i + 2]
            if nxt in _ESCAPE_PROBLEMS:
                return f"\\{nxt} {_ESCAPE_PROBLEMS[nxt]}"
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
            elif c == "[":
                return "'[' inside a character class is a nested class in Java; escape it as \\["
            elif pattern.startswith("&&", i):
                return "'&&' in a character class is an intersection in Java and literal in Python"
            i += 1
            continue
        if c == "[":
            in_class = True
            i += 2 if pattern.startswith("[^", i) else 1
            if pattern[i : i + 1] == "]":
                return "']' first in a character class is literal in Python and an error in Java; write \\]"
            continue
        if c == "]":
            return "an unescaped ']' outside a class; write \\]"
        if pattern.startswith("(?P", i):
            return "named groups (?P<..>) are Python-only"
        if pattern.startswith("(?<", i) and pattern[i + 3 : i + 4] not in ("=", "!"):
            return "named groups (?<..>) are Java-only"
        if pattern.startswith("(?>", i):
            return "atomic groups (?>..) are not portable"
        if c == "{" and not _QUANTIFIER_BRACE.match(pattern, i):
            return "a literal '{' is an error in Java; escape it as \\{"
        if c in "*+?}" and pattern[i + 1 : i + 2] == "+":
            return "possessive quantifiers (*+, ++, ?+) are not portable"
        i += 1
    return None


# --- Loading --------------------------------------------------------------------------------


def _packaged_rules() -> Any:
    return resources.files("fwpolicy") / "aliases.yaml"


def rules_path(cfg: PolicyConfig | None = None) -> Any:
    """Where the alias rules come from: ``cfg.aliases`` when set, else the repository's
    ``conf/aliases.yaml``, else a copy packaged as ``fwpolicy/aliases.yaml`` (a wheel)."""
    configured = getattr(cfg, "aliases", None)
    if configured:
        return Path(configured)
    repo = Path(__file__).resolve().parents[3] / "conf" / "aliases.yaml"
    if repo.is_file():
        return repo
    packaged = _packaged_rules()
    if packaged.is_file():
        return packaged
    raise AliasRulesError(
        f"alias rules not found: neither {repo} nor the packaged fwpolicy/aliases.yaml exists; "
        "set 'aliases' in the config to the rules file"
    )


def _fail(source: str, where: str, reason: str) -> AliasRulesError:
    return AliasRulesError(f"{source}: {where}: {reason}")


def _parse_rule(source: str, index: int, raw: Any) -> AliasRule:
    where = f"rule {index}"
    if not isinstance(raw, dict):
        raise _fail(source, where, f"expected a mapping with keys {', '.join(RULE_KEYS)}, got {raw!r}")
    name = raw.get("name")
    if isinstance(name, str):
        where = f"rule {index} ({name!r})"
    missing = [k for k in RULE_KEYS if k not in raw]
    if missing:
        raise _fail(source, where, f"missing key(s) {', '.join(missing)}")
    unknown = sorted(set(raw) - set(RULE_KEYS), key=str)
    if unknown:
        raise _fail(source, where, f"unknown key(s) {unknown}; a rule has {', '.join(RULE_KEYS)}")
    for key in RULE_KEYS[:-1]:
        if not isinstance(raw[key], str):
            raise _fail(source, where, f"{key} must be a string, got {type(raw[key]).__name__} {raw[key]!r}")
    if not _NAME.match(name):
        raise _fail(source, where, "name must be lower_snake_case (letters, digits, '_')")
    example = raw["example"]
    if not isinstance(example, dict) or sorted(example) != sorted(EXAMPLE_KEYS):
        raise _fail(
            source, where, f"example must be a mapping with exactly the keys {', '.join(EXAMPLE_KEYS)}"
        )
    for key in EXAMPLE_KEYS:
        if not isinstance(example[key], str):
            raise _fail(source, where, f"example {key} must be a string, got {example[key]!r}")
    pattern = raw["pattern"]
    if not pattern:
        raise _fail(source, where, "pattern is empty")
    # Portability first: Python accepts some Java-only syntax with a different meaning (and a warning).
    problem = portability_problem(pattern)
    if problem:
        raise _fail(source, where, f"pattern {pattern!r} is not portable between Java and Python: {problem}")
    try:
        compiled = re.compile(pattern, re.IGNORECASE)
    except re.error as e:
        raise _fail(source, where, f"invalid regular expression {pattern!r}: {e}") from e
    if compiled.groups > MAX_GROUPS:
        raise _fail(
            source, where, f"pattern has {compiled.groups} groups; at most {MAX_GROUPS} (use (?:...))"
        )
    for ref in _GROUP_REF.findall(raw["replacement"]):
        if int(ref) > compiled.groups:
            raise _fail(
                source, where, f"replacement refers to ${ref} but the pattern has {compiled.groups} group(s)"
            )
    return AliasRule(
        name, raw["description"], pattern, raw["replacement"], example["input"], example["output"]
    )


def parse_alias_rules(text: str, source: str = "<alias rules>") -> tuple[AliasRule, ...]:
    """Rules from YAML text, validated (see the module's docstring); ``source`` names it in errors."""
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise AliasRulesError(f"{source}: not valid YAML: {e}") from e
    if not isinstance(loaded, list) or not loaded:
        raise AliasRulesError(f"{source}: expected a non-empty list of rules at the top level")
    rules = tuple(_parse_rule(source, i, raw) for i, raw in enumerate(loaded, start=1))
    seen: dict[str, int] = {}
    for i, rule in enumerate(rules, start=1):
        if rule.name in seen:
            raise _fail(source, f"rule {i} ({rule.name!r})", f"duplicate name (also rule {seen[rule.name]})")
        seen[rule.name] = i
    for i, rule in enumerate(rules, start=1):
        steps = explain(rule.example_input, rules)
        got = steps[-1][2] if steps else rule.example_input.lower()
        where = f"rule {i} ({rule.name!r})"
        if got != rule.example_output:
            fired = ", ".join(name for name, _, _ in steps) or "none"
            raise _fail(
                source,
                where,
                f"example {rule.example_input!r} gives {got!r}, not {rule.example_output!r} "
                f"(rules applied: {fired})",
            )
        if rule.name not in {name for name, _, _ in steps}:
            raise _fail(source, where, f"example {rule.example_input!r} does not exercise this rule")
    return rules


@functools.lru_cache(maxsize=16)
def _load_cached(source: str, _version: Any) -> tuple[AliasRule, ...]:
    if source.startswith("pkg:"):
        text = _packaged_rules().read_text(encoding="utf-8")
    else:
        text = Path(source).read_text(encoding="utf-8")
    return parse_alias_rules(text, source)


def load_alias_rules(path: Any = None) -> tuple[AliasRule, ...]:
    """The rules of ``path`` (default: ``rules_path()``), validated; cached per file and version.

    ``path`` is a file name, or what ``rules_path`` answers (possibly a packaged resource)."""
    where = rules_path() if path is None else path
    if isinstance(where, str | Path):
        where = Path(where)
        if not where.is_file():
            raise AliasRulesError(f"alias rules file not found: {where}")
        resolved = where.resolve()
        return _load_cached(str(resolved), resolved.stat().st_mtime_ns)  # an edited file is re-read
    return _load_cached("pkg:fwpolicy/aliases.yaml", None)


# --- Applying -------------------------------------------------------------------------------


def compile_aliases(rules: Iterable[AliasRule]) -> Callable[[ColumnOrName], Column]:
    """The rules as one Column expression: ``lower`` then nested ``regexp_replace``, in order."""
    rules = tuple(rules)

    def alias(folder_path: ColumnOrName) -> Column:
        c = F.lower(_col(folder_path))
        for rule in rules:
            c = F.regexp_replace(c, F.lit(rule.java_pattern), F.lit(rule.java_replacement))
        return c

    return alias


def normalized_alias(folder_path: ColumnOrName, cfg: PolicyConfig | None = None) -> Column:
    """``AliasPath`` under profile ``normalized``, with the rules of ``rules_path(cfg)``."""
    return compile_aliases(load_alias_rules(rules_path(cfg)))(folder_path)


def explain(path: str, rules: Sequence[AliasRule] | None = None) -> list[tuple[str, str, str]]:
    """``(rule name, before, after)`` for each rule that changes ``path`` (pure Python)."""
    rules = load_alias_rules() if rules is None else rules
    text, steps = path.lower(), []
    for rule in rules:
        after = rule.apply(text)
        if after != text:
            steps.append((rule.name, text, after))
            text = after
    return steps


def normalize_path(path: str, rules: Sequence[AliasRule] | None = None) -> str:
    """The alias of one path in pure Python; the Spark expression gives the same result."""
    steps = explain(path, rules)
    return steps[-1][2] if steps else path.lower()


# --- Operating system and ephemeral range ---------------------------------------------------


def os_family_expr(folder_path: ColumnOrName, os_platform: ColumnOrName | None = None) -> Column:
    """``'linux'``, ``'macos'``, ``'windows'`` or ``'unknown'`` for each row.

    An OS column (Defender's ``OSPlatform``: ``Windows11``, ``WindowsServer2022``, ``Linux``,
    ``macOS``) decides when it names one of the three. Otherwise the path's style decides: a
    path starting with ``/`` is macOS under an unambiguous macOS folder (``MACOS_PATH``) and
    Linux otherwise; any other non-empty path (a drive letter, a long-path or NT device prefix)
    is Windows; an empty path is unknown.
    """
    p = _col(folder_path)
    unix = p.startswith("/")  # checked first: Spark skips the regex for Windows paths
    from_path = (
        F.when(unix & p.rlike(MACOS_PATH), F.lit(MACOS))
        .when(unix, F.lit(LINUX))
        .when(p != F.lit(""), F.lit(WINDOWS))
        .otherwise(F.lit(UNKNOWN))
    )
    if os_platform is None:
        return from_path
    platform = F.lower(F.trim(_col(os_platform)))
    return (
        F.when(platform.startswith("windows"), F.lit(WINDOWS))
        .when(platform.startswith("linux"), F.lit(LINUX))
        .when(platform.rlike("^(?:macos|mac os|osx)"), F.lit(MACOS))
        .otherwise(from_path)
    )


def _port_setting(cfg: PolicyConfig | None, name: str) -> int:
    """``cfg``'s port setting ``name``, else ``PolicyConfig``'s default (defined there only)."""
    value = getattr(cfg, name, getattr(PolicyConfig, name))
    if not (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65536):
        raise ConfigError(f"{name} must be an integer in 1..65536, got {value!r}")
    return value


def ephemeral_start_expr(
    folder_path: ColumnOrName, cfg: PolicyConfig | None, os_platform: ColumnOrName | None = None
) -> Column:
    """First port of the ephemeral range for each row, by OS (see ``os_family_expr``).

    Linux: ``cfg.ephemeral_start_linux`` (32768, the kernel's default ``ip_local_port_range``);
    macOS: ``cfg.ephemeral_start_macos`` (49152, the IANA range, as Windows); Windows and
    anything else: ``cfg.ephemeral_start``. The OS expression is evaluated once per row (a map
    lookup, not a CASE that would repeat it).
    """
    starts = F.create_map(
        F.lit(LINUX),
        F.lit(_port_setting(cfg, "ephemeral_start_linux")),
        F.lit(MACOS),
        F.lit(_port_setting(cfg, "ephemeral_start_macos")),
    )
    other = F.lit(_port_setting(cfg, "ephemeral_start"))
    return F.coalesce(starts[os_family_expr(folder_path, os_platform)], other)
