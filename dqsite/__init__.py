"""The bundled site: the Django project that ``manage.py``, ``make run`` and
the tests use (settings, root URLs, WSGI and ASGI entry points).

It is not part of the installed package. A project of your own uses the
reusable app ``dqadmin`` alone (see the README, "Add dq to your Django
project"); this package is an example of doing so.
"""
