"""Runs queries through ADBC's Flight SQL driver, the way an analyst's tools
connect to `hexroad serve --flight-listen`, and prints every answer as JSON.

    flight_client.py URI AUTH QUERY...

AUTH is `none`, `bearer:TOKEN` or `basic:USER:PASSWORD`. Prints
{"answers": [{"rows": [...]} | {"error": {"status": ..., "message": ...}}]}.
"""

import datetime
import json
import sys

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager


def plain(value):
    """A value as JSON: timestamps as RFC 3339, everything else as is."""
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    return value


def main():
    uri, auth, queries = sys.argv[1], sys.argv[2], sys.argv[3:]
    options = {}
    if auth.startswith("bearer:"):
        options[adbc_driver_flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value] = (
            "Bearer " + auth.removeprefix("bearer:")
        )
    elif auth.startswith("basic:"):
        user, password = auth.removeprefix("basic:").split(":", 1)
        options[adbc_driver_manager.DatabaseOptions.USERNAME.value] = user
        options[adbc_driver_manager.DatabaseOptions.PASSWORD.value] = password
    answers = []
    with flight_sql.connect(uri, db_kwargs=options, autocommit=True) as conn:
        for query in queries:
            try:
                with conn.cursor() as cursor:
                    cursor.execute(query)
                    table = cursor.fetch_arrow_table()
                rows = [
                    {k: plain(v) for k, v in row.items()} for row in table.to_pylist()
                ]
                answers.append({"rows": rows})
            except flight_sql.Error as e:
                status = getattr(e, "status_code", None)
                answers.append(
                    {
                        "error": {
                            "status": status.name if status else type(e).__name__,
                            "message": str(e),
                        }
                    }
                )
        try:
            info = conn.adbc_get_info()
            objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
        except flight_sql.Error:
            info, objects = {}, []
    tables = sorted(
        t["table_name"]
        for catalog in objects
        for schema in catalog["catalog_db_schemas"]
        for t in schema["db_schema_tables"]
    )
    print(
        json.dumps(
            {"answers": answers, "vendor": info.get("vendor_name"), "tables": tables}
        )
    )


if __name__ == "__main__":
    main()
