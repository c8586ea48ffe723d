"""thaw serve: the stack online. Events in (an SQL store), recommendations out, every user's
state adapted from their stored history on the request. See ``app`` (HTTP), ``service``
(model, catalogue, cache), ``store`` (SQL) and ``cli`` (the command)."""
