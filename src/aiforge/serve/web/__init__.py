"""The web playground: a home page and one page per served model, served by the server itself.

``routes.py`` serves the static pages (``static/``: plain HTML, JavaScript and CSS, no build step,
no CDN) and the JSON the pages read (``/v1/ui/...``, behind the API key like every model route);
each kind's try-it panel is the ``panel.js`` beside its ``page.py`` (its registry row's ``page``).
"""
