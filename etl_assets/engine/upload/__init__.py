"""Uploads: a file checked before it is accepted, then placed where its flow's extract reads it."""

from etl_assets.engine.upload.check import Problem, Rejection, UploadCheck, check_upload
from etl_assets.engine.upload.place import Placed, UploadRefused, place_upload

__all__ = ["Placed", "Problem", "Rejection", "UploadCheck", "UploadRefused", "check_upload", "place_upload"]
