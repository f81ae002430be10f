"""Media: what a file's bytes are and what can be shown of them.

types.py classifies MIME types (the one rule, for the protocols' hints and the worker's verdict);
sniff.py names the bytes; analysis.py dispatches to one analyser per kind (image.py, pdf.py, video.py,
audio.py), each returning metadata and a picture that thumbnail.py turns into the thumbnail. The
decoders parse hostile input, so the worker never runs them itself: pool.py runs analysis.analyse in
child processes (child.py) under a time and a memory limit."""
