"""What the HTTP interfaces share (``api``, ``web``, ``feeds``): the request's
session on the server's catalog and store and the principal it acts for
(``deps``), application errors as HTTP statuses both ways (``statuses``, read by
the remote client too), the one error body (``problems``) and the access log
(``requestlog``). It may import ``app`` and below, never an interface."""
