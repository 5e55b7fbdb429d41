"""Command-line tools. Each ``tools/<name>.py`` runs as a script and, installed as
``lumbar_d2.tools``, backs a console script (``lumbar-convert``, ``lumbar-train``,
``lumbar-evaluate``, ``lumbar-predict``, ``lumbar-export``, ``lumbar-collect-results``)."""
