"""The data-object ledger: which model version (``etl_data_models``) made which partition of
which delivery (``etl_data_objects``), stage by stage and run by run
(``etl_data_object_stages``). Kept in the target database beside the data, so the load's and
link's rows commit with the data they describe. A few rows per partition, never per row."""
