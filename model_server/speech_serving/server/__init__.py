"""The speech model server: a KServe `Model` for one recognizer version served over HTTP (v1 and v2).

`speech-server` (see __main__) parses settings, loads the model and binds --host/--port.
"""
