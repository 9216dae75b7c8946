"""FairSkin ML engine: plain Python and torch. Never imports Django or the apps."""
