"""The bookkeeping columns every staged frame carries beside the source's own: each row's
source line and file, and a rejected row's field and reason. Their names start with ``_`` so
no source column can take them."""

ERROR_FIELD = "_error_field"
ERROR_REASON = "_error_reason"
LINE = "_line"
SOURCE_FILE = "_source_file"
