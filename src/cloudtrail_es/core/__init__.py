"""What every layer uses: settings, errors, results, names, retry and the breaker, redaction, logs, codecs."""
