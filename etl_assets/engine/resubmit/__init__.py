"""Corrected rejects sent back: an error file, corrected by an operator, through the flow's
own transform, load and link again, each corrected row loaded once however often it is sent."""
