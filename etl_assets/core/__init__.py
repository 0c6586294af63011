"""The flow machinery: nothing here names a flow."""
