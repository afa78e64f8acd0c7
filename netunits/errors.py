"""The one exception meant for the user, and a library's failure put in its words."""


class PipelineError(Exception):
    """An error meant for the user: one line naming the key or file, what was wrong, what is allowed.

    run_stage (netunits.runtime) prints it as `error: <message>` and exits with status 2.
    """


def _first_sentence(text):
    line = " ".join(text.split())
    end = line.find(". ")
    return line[:end + 1] if end > 0 else line


def load_failure(exc):
    """Why torch.load (or a loader) failed, in whole sentences for a one-line message: its first
    sentence; for a file weights_only loading refused, the sentence naming what it refused
    (torch's advice to load with weights_only=False is left out: that would run the file's code)."""
    text = str(exc).strip()
    if not text or " " not in text:        # EOFError(''), KeyError('101'): the type says more
        return f"{type(exc).__name__} {text}".strip()
    paragraphs = [p for p in text.split("\n\n") if p.strip()]
    if paragraphs[0].startswith("Weights only load failed"):
        details = [p for p in paragraphs[1:] if not p.strip().startswith("Check the documentation")]
        return "weights_only loading refused it: " + (_first_sentence(details[0]) if details else "not only tensors")
    return _first_sentence(paragraphs[0])
