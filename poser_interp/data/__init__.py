"""Data: scenarios, the scenario bank and generator, POSER files, personas, wordings, concepts."""
