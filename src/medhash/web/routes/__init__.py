"""The web app's routes, one module per group, each an :class:`fastapi.APIRouter` named ``router``
whose functions take the server state (and the token check) as FastAPI dependencies:
:mod:`.health` (open), :mod:`.archive`, :mod:`.slices` and :mod:`.search` (token when the server has
one), :mod:`.page` (the search page)."""
