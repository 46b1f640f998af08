"""disclosure: residents' disclosure (30-32 … 30-34) and correction (30-35) cases."""
