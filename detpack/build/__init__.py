"""Building: the request and its config, the controlled environment, the source and where it is laid out,
build dependencies (lock, install, cache), the PEP 517 frontend and the pipeline that ties them together."""
