"""A case's statement for people: a printable HTML page and a text form, rendered from the contract's model.

The ledger assembles the statement (``activities.ledger.case_statement``); this
package only renders it, adding no figure: ``render_html`` for the HTTP API's
page (and any page that wants to show it, such as a staff console),
``render_text`` for ``margin-call cases statement``. Templates are Jinja2 with
autoescaping, in ``templates/`` beside this module; the page carries its own
styles (a print stylesheet included) and loads nothing from elsewhere.
"""

from __future__ import annotations

from worker.statement.render import render_html, render_text

__all__ = ["render_html", "render_text"]
