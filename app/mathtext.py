"""TeX math to HTML with Unicode symbols: no LaTeX engine, good enough for the math a chat answer contains.

Covers Greek letters, common operators and relations, blackboard/bold/roman text, ``^``/``_`` as
super/subscripts, ``\\frac``, ``\\sqrt``, ``\\left``/``\\right`` and spacing commands. Anything unknown is
kept as its TeX name, so nothing silently disappears; the raw TeX stays in the message's Markdown source.
"""

from __future__ import annotations

import html

SYMBOLS = {
    # Greek
    "alpha": "α",
    "beta": "β",
    "gamma": "γ",
    "delta": "δ",
    "epsilon": "ϵ",
    "varepsilon": "ε",
    "zeta": "ζ",
    "eta": "η",
    "theta": "θ",
    "vartheta": "ϑ",
    "iota": "ι",
    "kappa": "κ",
    "lambda": "λ",
    "mu": "μ",
    "nu": "ν",
    "xi": "ξ",
    "pi": "π",
    "varpi": "ϖ",
    "rho": "ρ",
    "varrho": "ϱ",
    "sigma": "σ",
    "varsigma": "ς",
    "tau": "τ",
    "upsilon": "υ",
    "phi": "ϕ",
    "varphi": "φ",
    "chi": "χ",
    "psi": "ψ",
    "omega": "ω",
    "Gamma": "Γ",
    "Delta": "Δ",
    "Theta": "Θ",
    "Lambda": "Λ",
    "Xi": "Ξ",
    "Pi": "Π",
    "Sigma": "Σ",
    "Upsilon": "Υ",
    "Phi": "Φ",
    "Psi": "Ψ",
    "Omega": "Ω",
    # operators
    "sum": "∑",
    "prod": "∏",
    "coprod": "∐",
    "int": "∫",
    "iint": "∬",
    "iiint": "∭",
    "oint": "∮",
    "partial": "∂",
    "nabla": "∇",
    "infty": "∞",
    "pm": "±",
    "mp": "∓",
    "times": "×",
    "div": "÷",
    "cdot": "·",
    "cdots": "⋯",
    "ldots": "…",
    "dots": "…",
    "vdots": "⋮",
    "ddots": "⋱",
    "circ": "∘",
    "bullet": "•",
    "star": "⋆",
    "ast": "∗",
    "oplus": "⊕",
    "otimes": "⊗",
    "wedge": "∧",
    "vee": "∨",
    "land": "∧",
    "lor": "∨",
    "neg": "¬",
    "lnot": "¬",
    "cap": "∩",
    "cup": "∪",
    "setminus": "∖",
    "bigcup": "⋃",
    "bigcap": "⋂",
    "emptyset": "∅",
    "varnothing": "∅",
    "forall": "∀",
    "exists": "∃",
    "nexists": "∄",
    "angle": "∠",
    "degree": "°",
    "prime": "′",
    "hbar": "ℏ",
    "ell": "ℓ",
    "Re": "ℜ",
    "Im": "ℑ",
    "aleph": "ℵ",
    "surd": "√",
    "triangle": "△",
    "square": "□",
    "checkmark": "✓",
    # relations
    "leq": "≤",
    "le": "≤",
    "geq": "≥",
    "ge": "≥",
    "neq": "≠",
    "ne": "≠",
    "approx": "≈",
    "sim": "∼",
    "simeq": "≃",
    "cong": "≅",
    "equiv": "≡",
    "propto": "∝",
    "ll": "≪",
    "gg": "≫",
    "in": "∈",
    "notin": "∉",
    "ni": "∋",
    "subset": "⊂",
    "supset": "⊃",
    "subseteq": "⊆",
    "supseteq": "⊇",
    "mid": "∣",
    "parallel": "∥",
    "perp": "⊥",
    "models": "⊨",
    "vdash": "⊢",
    # arrows
    "to": "→",
    "rightarrow": "→",
    "leftarrow": "←",
    "gets": "←",
    "leftrightarrow": "↔",
    "Rightarrow": "⇒",
    "Leftarrow": "⇐",
    "Leftrightarrow": "⇔",
    "implies": "⟹",
    "iff": "⟺",
    "mapsto": "↦",
    "uparrow": "↑",
    "downarrow": "↓",
    "longrightarrow": "⟶",
    "longleftarrow": "⟵",
    # delimiters
    "langle": "⟨",
    "rangle": "⟩",
    "lceil": "⌈",
    "rceil": "⌉",
    "lfloor": "⌊",
    "rfloor": "⌋",
    "lbrace": "{",
    "rbrace": "}",
    "{": "{",
    "}": "}",
    "|": "‖",
    "vert": "|",
    "Vert": "‖",
    # spacing and escapes
    ",": "\u2009",
    ";": "\u2005",
    ":": "\u2005",
    "!": "",
    "quad": "\u2003",
    "qquad": "\u2003\u2003",
    " ": " ",
    "%": "%",
    "$": "$",
    "&": "&",
    "#": "#",
    "_": "_",
    "\\": "<br>",
}
FUNCTIONS = {
    "sin",
    "cos",
    "tan",
    "cot",
    "sec",
    "csc",
    "log",
    "ln",
    "exp",
    "lim",
    "max",
    "min",
    "sup",
    "inf",
    "det",
    "gcd",
    "arg",
    "deg",
    "dim",
    "ker",
    "arcsin",
    "arccos",
    "arctan",
    "sinh",
    "cosh",
    "tanh",
    "Pr",
    "mod",
    "bmod",
}
BLACKBOARD = {"R": "ℝ", "N": "ℕ", "Z": "ℤ", "Q": "ℚ", "C": "ℂ", "P": "ℙ", "E": "𝔼", "1": "𝟙"}
IGNORED = {
    "left",
    "right",
    "big",
    "Big",
    "bigg",
    "Bigg",
    "bigl",
    "bigr",
    "Bigl",
    "Bigr",
    "displaystyle",
    "textstyle",
    "limits",
    "nolimits",
}


class _Parser:
    def __init__(self, tex: str):
        self.s = tex
        self.i = 0

    def parse(self, stop: str | None = None) -> str:
        out: list[str] = []
        while self.i < len(self.s):
            c = self.s[self.i]
            if stop is not None and c == stop:
                self.i += 1
                return "".join(out)
            if c == "\\":
                out.append(self._command())
            elif c == "{":
                self.i += 1
                out.append(self.parse("}"))
            elif c in "^_":
                self.i += 1
                tag = "sup" if c == "^" else "sub"
                out.append(f"<{tag}>{self._argument()}</{tag}>")
            elif c == "'":
                self.i += 1
                out.append("′")
            elif c == "~":
                self.i += 1
                out.append("\u00a0")
            elif c.isalpha():
                self.i += 1
                out.append(f"<i>{html.escape(c)}</i>")
            elif c.isspace():
                self.i += 1
                if out and not out[-1].endswith(" "):
                    out.append(" ")
            else:
                self.i += 1
                out.append(html.escape(c) if c not in "-*" else {"-": "−", "*": "∗"}[c])
        return "".join(out)

    def _argument(self) -> str:
        while self.i < len(self.s) and self.s[self.i] == " ":
            self.i += 1
        if self.i >= len(self.s):
            return ""
        c = self.s[self.i]
        if c == "{":
            self.i += 1
            return self.parse("}")
        if c == "\\":
            return self._command()
        self.i += 1
        return f"<i>{html.escape(c)}</i>" if c.isalpha() else html.escape(c)

    def _raw_argument(self) -> str:
        while self.i < len(self.s) and self.s[self.i] == " ":
            self.i += 1
        if self.i < len(self.s) and self.s[self.i] == "{":
            depth, start = 0, self.i
            while self.i < len(self.s):
                ch = self.s[self.i]
                depth += ch == "{"
                depth -= ch == "}"
                self.i += 1
                if depth == 0:
                    return self.s[start + 1 : self.i - 1]
            return self.s[start + 1 :]
        if self.i < len(self.s):
            self.i += 1
            return self.s[self.i - 1]
        return ""

    def _command(self) -> str:
        self.i += 1  # the backslash
        start = self.i
        while self.i < len(self.s) and self.s[self.i].isalpha():
            self.i += 1
        name = self.s[start : self.i]
        if not name and self.i < len(self.s):
            name = self.s[self.i]
            self.i += 1
        if name in SYMBOLS:
            return SYMBOLS[name]
        if name in IGNORED:
            return ""
        if name in FUNCTIONS:
            return name + "\u2009"
        if name in ("frac", "dfrac", "tfrac"):
            num, den = self._argument(), self._argument()
            return f"{_group(num)}⁄{_group(den)}"
        if name == "sqrt":
            return f"√{_group(self._argument())}"
        if name in ("text", "textrm", "mathrm", "operatorname", "mbox"):
            return html.escape(self._raw_argument())
        if name in ("mathbf", "textbf", "boldsymbol", "bm"):
            return f"<b>{self._argument()}</b>"
        if name in ("mathit", "textit", "emph"):
            return f"<i>{self._argument()}</i>"
        if name == "mathbb":
            raw = self._raw_argument()
            return "".join(BLACKBOARD.get(ch) or html.escape(ch) for ch in raw)
        if name in ("hat", "bar", "vec", "tilde", "dot", "overline"):
            mark = {
                "hat": "\u0302",
                "bar": "\u0304",
                "vec": "\u20d7",
                "tilde": "\u0303",
                "dot": "\u0307",
                "overline": "\u0305",
            }[name]
            return self._argument() + mark
        if name in ("begin", "end"):
            self._raw_argument()
            return ""
        return html.escape("\\" + name)


def _group(rendered: str) -> str:
    plain = rendered.replace("<i>", "").replace("</i>", "")
    return rendered if len(plain) <= 1 else f"({rendered})"


def tex_to_html(tex: str) -> str:
    """The HTML (with Unicode symbols) for one TeX math expression, without its delimiters."""
    return _Parser(tex.strip()).parse().replace("&amp;", "\u2003")
