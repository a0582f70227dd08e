"""The bottom layer: what every other layer may use and that uses nothing of the toolkit but its errors.

`locking` (one writer per folder), `jsonio` (JSON files written atomically, read with errors that name the file),
`atomic` (a file written whole or not at all) and `processes` (calls in spawned worker processes whose messages
come back while they run). Nothing here imports torch.
"""
