"""Prompt templates (提示模板), chapter 21: LangChain's ``PromptTemplate`` without the dependency.

A template is a string with ``{name}`` fields (``str.format`` syntax); ``{{`` and ``}}`` are literal braces.
:class:`PromptTemplate` finds its variables once, and :meth:`PromptTemplate.format` is *strict*: a missing
variable and a variable the template does not have both raise ``ValueError`` naming them. The strictness
catches the source notes' bug (digest part A, 13): ``{{context}}`` in a ``str.format`` template renders as the
literal text ``{context}``, so the retrieved context was never injected; here passing ``context=`` to such a
template is an error that says so, instead of a silent prompt without its context.
"""
from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

__all__ = ["PromptTemplate", "template_variables", "FewShotTemplate"]


def template_variables(template: str) -> list[str]:
    """The ``{field}`` names of a ``str.format`` template, in order of first use (``{{x}}`` is not a field).

    Raises ValueError for positional fields (``{}`` or ``{0}``), attribute/index fields (``{a.b}``,
    ``{a[0]}``) and unbalanced braces.
    """
    if not isinstance(template, str):
        raise TypeError(f"template must be a str, got {type(template).__name__}")
    names: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ValueError(f"template has unbalanced braces ({e}); write literal braces as {{{{ and }}}}") from None
    for _, field, _, _ in parsed:
        if field is None:
            continue
        if not field.isidentifier():
            raise ValueError(f"template field {{{field}}} must be a plain name such as {{question}}; positional "
                             "({}) and attribute/index fields are not allowed")
        if field not in names:
            names.append(field)
    return names


@dataclass(frozen=True)
class PromptTemplate:
    """A ``str.format`` template with its variables; ``partial`` fills some of them ahead of time."""

    template: str

    @property
    def input_variables(self) -> list[str]:
        return template_variables(self.template)

    def format(self, **values: Any) -> str:
        """Fill every variable. Raises ValueError for a missing variable or one the template lacks."""
        want = self.input_variables
        missing = [v for v in want if v not in values]
        if missing:
            raise ValueError(f"missing variable(s) {missing} for this template; pass them, e.g. "
                             f"format({', '.join(f'{v}=...' for v in missing)}); the template needs {want}")
        extra = [v for v in values if v not in want]
        if extra:
            hint = [v for v in extra if "{{" + v + "}}" in self.template]
            why = (f"; the template writes {{{{{hint[0]}}}}}, which renders as the literal text {{{hint[0]}}}: "
                   f"use single braces {{{hint[0]}}}" if hint else "")
            raise ValueError(f"variable(s) {extra} are not in the template (it has {want}){why}")
        return self.template.format(**values)

    def partial(self, **values: Any) -> "PromptTemplate":
        """A template with some variables filled in (their braces replaced, the others kept)."""
        unknown = [v for v in values if v not in self.input_variables]
        if unknown:
            raise ValueError(f"partial got {unknown}, which the template does not have ({self.input_variables})")
        keep = {v: "{" + v + "}" for v in self.input_variables if v not in values}
        escaped = {k: str(v).replace("{", "{{").replace("}", "}}") for k, v in values.items()}
        return PromptTemplate(self.template.replace("{{", "\0").replace("}}", "\1")
                              .format(**keep, **escaped).replace("\0", "{{").replace("\1", "}}"))


@dataclass(frozen=True)
class FewShotTemplate:
    """Few-shot prompt (少样本提示): a prefix, each example through ``example``, then ``suffix``.

    ``format(examples=[{...}, ...], **suffix_values)``; ``max_examples`` keeps the first k (an example selector
    in its simplest form).
    """

    prefix: str
    example: PromptTemplate
    suffix: PromptTemplate
    separator: str = "\n\n"

    def format(self, examples: Sequence[Mapping[str, Any]], max_examples: int | None = None, **values: Any) -> str:
        if max_examples is not None and (isinstance(max_examples, bool) or not isinstance(max_examples, int)
                                         or max_examples < 0):
            raise ValueError(f"max_examples must be an int >= 0 or None, got {max_examples!r}")
        shots = list(examples)[:max_examples]
        parts = [self.prefix] + [self.example.format(**ex) for ex in shots] + [self.suffix.format(**values)]
        return self.separator.join(p for p in parts if p)
