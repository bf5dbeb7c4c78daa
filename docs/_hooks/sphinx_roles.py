"""MkDocs hook: the package's docstrings mark names with Sphinx roles (:func:`load`,
:class:`~chestattn_jax.data.raw.DataFormatError`), which mkdocstrings prints as written.
The site shows the name alone, in code, as the role means."""

import re

_ROLE = re.compile(r":(?:func|class|mod|data|meth|attr|exc|obj):<code>~?")


def on_page_content(html, **kwargs):
    return _ROLE.sub("<code>", html)
