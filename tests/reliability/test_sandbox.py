"""Templates and expressions written by people we do not fully trust: escape attempts are refused,
and expensive ones are bounded — a clear error, never a hang and never a gigabyte of memory.

Templates run in mapping values (``{{ event.email | lower }}``) and in step subjects and bodies (any
API key with ``sequences:write`` writes those); expressions are JMESPath fields and RE2 regexes in
mapping rules. No test here is timed: a hang would be a test that never ends, a blow-up a test
killed for its memory.
"""

from __future__ import annotations

import textwrap

import pytest
from jinja2.exceptions import SecurityError

from connectors.base import InboundRequest
from seqbridge.mapping.registry import HookRegistry, validate_paths
from seqbridge.mapping.rules import RuleError, compile_condition, compile_path
from seqbridge.mapping.testing import simulate
from seqbridge.templating import MAX_SIZE, TemplateError, TemplateLimit, compile_template, render
from tests.factories import active_sequence, contact
from tests.test_processor import _enrollment, _processor, _run

CONTEXT = {"first_name": "Ada", "x": "abc", "items": list(range(1000)), "attributes": {"plan": "pro"}}

ESCAPES = [
    "{{ x.__class__ }}",
    "{{ x.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__.__mro__[1].__subclasses__()[40]('/etc/passwd').read() }}",
    "{{ x|attr('__class__') }}",
    "{{ (x|attr('__class__'))|attr('__mro__') }}",
    "{{ x|attr('__class__')|attr('__base__')|attr('__subclasses__') }}",
    "{{ '{0.__class__}'.format(x) }}",
    "{{ '{0.__class__.__mro__[1].__subclasses__}'.format(x) }}",
    "{{ '{a.__class__}'.format_map({'a': x}) }}",
    "{{ '{0.__globals__}'.format(cycler.__init__) }}",
    "{{ '%s'|format(x.__class__) }}",
    "{{ self.__init__.__globals__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ cycler.__init__.__globals__.os.system('id') }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ range.__self__ }}",
    "{{ x.upper.__self__.__class__ }}",
    "{{ dict.__base__.__subclasses__() }}",
    "{{ items.append(1) }}{{ items|length }}",
    "{{ attributes.update(plan='free') }}{{ attributes.plan }}",
    "{{ lipsum.__globals__ }}",
    "{{ config }}{{ request }}{{ os }}",
    "{% include '/etc/passwd' %}",
    "{% import 'os' as os %}",
]


@pytest.mark.parametrize("template", ESCAPES)
def test_escape_attempts_reach_nothing(template):
    """Each is refused (SecurityError), fails plainly, or renders nothing of Python's insides."""
    try:
        out = render(template, {**CONTEXT, "items": [1], "attributes": {"plan": "pro"}})
    except (SecurityError, TypeError) as error:  # TypeError: no loader (include/import), unsafe calls
        assert "__" not in str(error) or "unsafe" in str(error)
        return
    assert out in ("", "1", "pro"), out  # the list and the dict are unchanged


BOUNDED = [
    ("{{ 'a' * 10**9 }}", "repetition too large"),
    ("{{ (range(99999)|list) * 2 }}", "repetition too large"),
    ("{{ 9**99 }}", "exponent too large"),
    ("{{ (10**64)**64 }}", "number too large"),
    ("{{ range(10**10)|length }}", "Range too big"),
    ("{{ 'x'.ljust(10**9) }}", "str.ljust() width larger than 100000"),
    ("{{ 'x'.zfill(10**9) }}", "str.zfill() width larger than 100000"),
    ("{{ 'x\ty'.expandtabs(10**9) }}", "str.expandtabs() result larger than 100000"),
    ("{{ ('x' * 99999).replace('x', 'x' * 99999) }}", "str.replace() result larger than 100000"),
    ("{{ ' ' .join(['x' * 99999, 'y' * 99999]) }}", "str.join() result larger than 100000"),
    ("{{ '{:>999999999}'.format(1) }}", "a format width or precision larger than 100000"),
    ("{{ '{:>{}}'.format(1, 999999999) }}", "a format spec taken from the arguments"),
    ("{{ '{a:>999999999}'.format_map({'a': 1}) }}", "a format width or precision larger than 100000"),
    ("{{ '%0999999999d' % 1 }}", "a %-format width or precision larger than 100000"),
    ("{{ '%*d' % (999999999, 1) }}", "a %-format width or precision taken from the arguments"),
    ("{{ '%0999999999d'|format(1) }}", "a %-format width or precision larger than 100000"),
    ("{{ 'x'|center(10**9) }}", "|center width larger than 100000"),
    ("{{ 'x'|indent(10**9) }}", "|indent result larger than 100000"),
    ("{{ ('x' * 99999)|replace('x', 'x' * 99999) }}", "|replace result larger than 100000"),
    ("{{ ([1] * 99999)|join('x' * 99999) }}", "|join result larger than 100000"),
    ("{{ items|slice(10**9)|list|length }}", "|slice or |batch count larger than 100000"),
    ("{{ items|batch(10**9, 'x')|list|length }}", "|slice or |batch count larger than 100000"),
    ("{{ ('x' * 99999)|wordwrap(1, wrapstring='y' * 99999) }}", "|wordwrap result larger than 100000"),
    ("{{ range(100000)|map('center', 99999)|join }}", "the template makes more than 1000000 characters"),
    (
        "{% set a = 'x' * 99999 %}{{ [a, a, a, a, a, a, a, a, a, a, a]|map('upper')|list|length }}",
        "the template makes more than 1000000 characters",
    ),
    (
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
        "the template runs more than 100000 operations",
    ),
    (
        "{% for a in x * 30000 %}{% for b in x * 30000 %}{% endfor %}{% endfor %}",
        "the template runs more than 100000 operations",
    ),
    (
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}",
        "the template runs more than 100000 operations",
    ),
    ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "the template recurses too deep"),
    ("{% for x in [1] recursive %}{{ loop([1]) }}{% endfor %}", "the template recurses too deep"),
    (
        "{% for a in range(100000) %}{{ 'x' * 99999 }}{% endfor %}",
        "the output is longer than 100000 characters",
    ),
    (
        "{% for a in range(2000) %}" + "y" * 100 + "{% endfor %}",
        "the output is longer than 100000 characters",
    ),
]


@pytest.mark.parametrize(("template", "reason"), BOUNDED, ids=[t for t, _ in BOUNDED])
def test_expensive_templates_are_refused_with_the_bound_they_hit(template, reason):
    with pytest.raises((TemplateLimit, OverflowError)) as refused:
        render(template, CONTEXT)
    assert reason in str(refused.value)


def test_lipsum_is_gone():
    assert render("{{ lipsum is defined }}", {}) == "False"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("Hi {{ first_name }}, {{ attributes.plan|upper }}", "Hi Ada, PRO"),
        ("{% for i in items %}{{ i }}{% endfor %}", "".join(map(str, range(1000)))),
        ("{{ items|map('string')|join(',')|length }}", str(len(",".join(map(str, range(1000)))))),
        ("{{ '%05d|%.2f' % (42, 3.14159) }}", "00042|3.14"),
        ("{{ '%05d'|format(42) }}", "00042"),
        ("{{ '{:>8}|{:,}'.format('x', 1234567) }}", "       x|1,234,567"),
        ("{{ 'x'|center(5) }}|{{ 'a\nb'|indent(2, true) }}", "  x  |  a\n  b"),
        ("{{ 'a-b-c'|replace('-', '+') }}|{{ 'ab'.ljust(4, '.') }}", "a+b+c|ab.."),
        ("{{ items|batch(400)|list|length }}|{{ items|slice(3)|list|length }}", "3|3"),
        ("{{ ('x' * 100000)|length }}", "100000"),
        ("{{ 'long text here'|wordwrap(5) }}", "long\ntext\nhere"),
        ("{% for a in range(300) %}{% for b in range(300) %}{% endfor %}{% endfor %}done", "done"),
        ("{{ 'é' * 99999 }}", "é" * 99999),
    ],
)
def test_ordinary_templates_are_untouched(template, expected):
    assert render(template, CONTEXT) == expected


@pytest.mark.parametrize(
    "template",
    [
        "{{ " + "a." * 5000 + "b }}",
        "{{ " + "(" * 1000 + "1" + ")" * 1000 + " }}",
        "{% if a %}" * 500 + "x" + "{% endif %}" * 500,
        "{% for a in b %}" * 25 + "{% endfor %}" * 25,  # Python allows 20 nested blocks
        "{{ a" + "|lower" * 5000 + " }}",
    ],
    ids=["attributes", "parentheses", "ifs", "loops", "filters"],
)
def test_templates_nested_too_deep_are_a_compile_error(template):
    with pytest.raises(TemplateError, match="nested too deep"):
        compile_template(template)


# Where templates run ----------------------------------------------------------------------------


def test_a_step_template_that_cannot_compile_is_a_400_and_one_that_runs_away_fails_the_send(api, services):
    """The API refuses what cannot compile; the processor fails (does not hang on) a send whose
    template goes over a bound, and the worker carries on with the next send."""
    sequence = api.post("/api/v1/sequences", json={"name": "Bombs"}).json["data"]
    nested = api.post(
        f"/api/v1/sequences/{sequence['id']}/steps",
        json={"subject": "s", "body": "{% for a in b %}" * 25 + "{% endfor %}" * 25},
    )
    assert nested.status_code == 400, nested.json
    assert nested.json["error"]["code"] == "invalid_template"
    assert nested.json["error"]["details"]["errors"][0]["path"] == "$.body"
    bomb = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
    runaway = active_sequence(api, name="Runaway", steps=({"delay_days": 0, "body": bomb},))
    fine = active_sequence(api, name="Fine", steps=({"delay_days": 0, "subject": "Hi {{ first_name }}"},))
    person = contact(api, first_name="Ada")
    enrolled = {
        s["id"]: api.post(f"/api/v1/sequences/{s['id']}/enroll", json={"contact_id": person["id"]}).json[
            "data"
        ]["id"]
        for s in (runaway, fine)
    }
    assert _run(_processor(services)) == 2
    failed = _enrollment(api, runaway["id"], enrolled[runaway["id"]])
    assert failed["status"] == "failed"
    assert "TemplateLimit: the template runs more than 100000 operations" in failed["last_error"]
    assert _enrollment(api, fine["id"], enrolled[fine["id"]])["status"] == "completed"
    [sent] = api.get("/api/v1/outbox?status=captured").json["data"]
    assert sent["subject"] == "Hi Ada"


def _hook(tmp_path, rules: str):
    (tmp_path / "m.yaml").write_text(
        "hooks:\n  h:\n    organization: acme\n    source: {connector: generic, public: true}\n    rules:\n"
        + textwrap.indent(textwrap.dedent(rules), "      ")
    )
    registry = HookRegistry(str(tmp_path), {}, watch_seconds=0)
    return registry.get("h")


def test_a_mapping_template_that_runs_away_fails_its_event_and_nothing_else(tmp_path):
    hook = _hook(
        tmp_path,
        """
        - name: bomb
          when: {field: event.payload.kind, equals: bomb}
          actions:
            - enroll: {sequence: S, contact: {email: "{{ range(99999)|map('center', 99999)|list|length }}"}}
        - name: ok
          actions:
            - enroll: {sequence: S, contact: {email: "{{ event.payload.email | lower }}"}}
        """,
    )
    for body, expected in (({"kind": "bomb", "x": "y"}, "refused: "), ({"email": "A@B.CO"}, None)):
        request = InboundRequest(
            "POST", "https://x/hooks/h", {}, {}, __import__("json").dumps(body).encode(), "application/json"
        )
        [event] = simulate(hook, request)
        if expected:
            assert (
                expected in event["error"]
                and "the template makes more than 1000000 characters" in event["error"]
            )
        else:
            assert event["actions"][0]["contact"] == {"email": "a@b.co"}


@pytest.mark.parametrize(
    ("rule", "line", "message"),
    [
        (
            "- when: {field: '" + "(" * 3000 + "a" + ")" * 3000 + "', exists: true}\n  actions: []\n",
            6,
            "the JMESPath expression is nested deeper than 50 levels",
        ),
        (
            "- when: {field: '" + "!" * 200 + "a', exists: true}\n  actions: []\n",
            6,
            "the JMESPath expression is nested deeper than 50 levels",
        ),
        (
            "- when: {field: '" + "a | " * 100 + "b', exists: true}\n  actions: []\n",
            6,
            "the JMESPath expression is nested deeper than 50 levels",
        ),
        (
            "- actions: [{enroll: {sequence: S, contact: {email: '{{ " + "a." * 3000 + "b|lower }}'}}}]\n",
            6,
            "bad template: the template is nested too deep",
        ),
        ("- when: {field: event.a, matches: '(a)\\1'}\n  actions: []\n", 6, "bad regex"),
        ("- when: {field: event.a, matches: '(?=a)b'}\n  actions: []\n", 6, "bad regex"),
        ("- when: {field: event.a, matches: '((a{100}){100}){100}'}\n  actions: []\n", 6, "bad regex"),
        (
            "- when: {field: event.a, matches: '" + "a" * 2001 + "'}\n  actions: []\n",
            6,
            "the regex is longer than 2000 characters",
        ),
    ],
    ids=[
        "jmespath-parens",
        "jmespath-nots",
        "jmespath-pipes",
        "template-deep",
        "regex-backreference",
        "regex-lookahead",
        "regex-huge-program",
        "regex-long",
    ],
)
def test_expressions_that_cannot_be_bounded_are_refused_at_validation_with_their_line(
    tmp_path, rule, line, message
):
    (tmp_path / "m.yaml").write_text(
        "hooks:\n  h:\n    organization: acme\n    source: {connector: generic, public: true}\n    rules:\n"
        + textwrap.indent(rule, "      ")
    )
    [problem] = validate_paths([str(tmp_path / "m.yaml")], {})
    assert problem.line == line and message in problem.message, problem


@pytest.mark.parametrize(
    "pattern", ["(.*){1000}", "(a+)+$", "(a|aa)*b", "[ab]*a[ab]{20}", ".{0,1000}!", "(x+x+)+y"]
)
def test_catastrophic_regexes_run_in_linear_time_on_a_megabyte(pattern):
    """RE2 never backtracks; with no capture groups asked for it answers from its DFA. Before,
    "(.*){1000}" over this field took half a minute in RE2's NFA (finding the submatches)."""
    test = compile_condition({"field": "event.text", "matches": pattern}, ("when",))
    text = "a" * 1_000_000 + "!"
    assert test({"event": {"text": text}}) is (pattern in ("(.*){1000}", "[ab]*a[ab]{20}", ".{0,1000}!"))


def test_a_long_path_over_deep_data_is_answered_and_a_deep_expression_refused():
    """JMESPath flattens a.b.c… and a[0][0]…, which its interpreter walks in a loop; what it
    nests (not, pipes, parentheses) it interprets by recursion, so that is bounded."""
    deep = current = {}
    for _ in range(60):
        current["a"] = current = {}
    assert compile_path("a." * 3000 + "b[0]", ("field",)).search(deep) is None
    assert compile_path("a" + "[0]" * 3000, ("field",)).search({"a": [[[1]]]}) is None
    with pytest.raises(RuleError, match="nested deeper than 50"):
        compile_path("!" * 60 + "a", ("field",))


def test_the_output_bound_is_the_documented_one():
    assert render("{{ 'x' * n }}", {"n": MAX_SIZE}) == "x" * MAX_SIZE
    with pytest.raises(TemplateLimit):
        render("{{ 'x' * n }}!", {"n": MAX_SIZE})
