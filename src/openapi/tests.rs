//! Conversion tests: each mapping rule, the reference documents, and calls rendered through the compiled
//! gateway to check that every argument lands where the operation wants it.

use super::*;
use crate::config::Style;
use crate::gateway::Gateway;
use crate::tool::Prepared;
use crate::upstream::UpstreamRequest;
use serde_json::json;

fn testdata(name: &str) -> String {
    let path = format!("{}/src/openapi/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn convert_text(text: &str, options: &Options) -> Result<Conversion, OpenApiError> {
    convert(&parse_document(text)?, options)
}

fn names(c: &Conversion) -> Vec<&str> {
    c.tools.iter().map(|t| t.tool.name.as_str()).collect()
}

/// A gateway serving `doc` through an in-config import, upstream at cluster `api`.
fn gateway(doc: &Value, extra: Value) -> Result<Gateway, crate::config::ConfigError> {
    let mut server = json!({"name": "api", "upstream": {"cluster": "api"}, "openapi": {"document": doc}});
    if let (Value::Object(s), Value::Object(e)) = (&mut server, extra) {
        for (k, v) in e {
            if k == "openapi" {
                for (ik, iv) in v.as_object().cloned().unwrap_or_default() {
                    s["openapi"][ik] = iv;
                }
            } else {
                s.insert(k, v);
            }
        }
    }
    Gateway::from_config_str(&json!({"servers": [server]}).to_string())
}

/// Renders the upstream request a call would send.
fn request(gw: &Gateway, tool: &str, args: Value) -> UpstreamRequest {
    let server = gw.server("api").unwrap();
    let t = server.tool(tool).unwrap_or_else(|| panic!("no tool {tool}"));
    match t.prepare(&gw.templates, &server.config, Some(&args)) {
        Prepared::Upstream(req, _) => req,
        Prepared::Done(result) => panic!("{tool}: no upstream request: {result}"),
    }
}

fn header<'a>(req: &'a UpstreamRequest, name: &str) -> Option<&'a str> {
    req.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn body_json(req: &UpstreamRequest) -> Value {
    serde_json::from_slice(req.body.as_deref().unwrap_or_default()).unwrap()
}

#[test]
fn every_reference_document_converts_completely() {
    let expected: [(&str, &[&str]); 6] = [
        ("api-with-examples.yaml", &["listVersionsv2", "getVersionDetailsv2"]),
        ("callback-example.yaml", &["post_streams"]),
        (
            "link-example.yaml",
            &[
                "getUserByName",
                "getRepositoriesByOwner",
                "getRepository",
                "getPullRequestsByRepository",
                "getPullRequestsById",
                "mergePullRequest",
            ],
        ),
        ("petstore-expanded.yaml", &["findPets", "addPet", "find_pet_by_id", "deletePet"]),
        ("petstore.yaml", &["listPets", "createPets", "showPetById"]),
        ("uspto.yaml", &["list-data-sets", "list-searchable-fields", "perform-search"]),
    ];
    for (file, tools) in expected {
        let c = convert_text(&testdata(file), &Options::default()).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(names(&c), tools, "{file}");
        assert!(c.skipped.is_empty(), "{file}: {:?}", c.skipped);
        assert_eq!(c.found(), tools.len());
        // The plugin accepts what the converter produced.
        let doc = parse_document(&testdata(file)).unwrap();
        let gw = gateway(&doc, json!({})).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(gw.server("api").unwrap().tools.len(), tools.len());
    }
}

#[test]
fn petstore_calls_put_every_parameter_in_place() {
    let doc = parse_document(&testdata("petstore-expanded.yaml")).unwrap();
    let gw = gateway(&doc, json!({"openapi": {"serverUrl": "http://127.0.0.1:8080/v2"}})).unwrap();
    let listing = gw.server("api").unwrap().tool("findPets").unwrap().listing();
    assert_eq!(listing["inputSchema"]["properties"]["limit"]["format"], "int32");
    assert_eq!(listing["annotations"]["readOnlyHint"], true);

    let req = request(&gw, "findPets", json!({"tags": ["a b", "c&d"], "limit": "5"}));
    assert_eq!((req.method.as_str(), req.cluster.as_str()), ("GET", "api"));
    assert_eq!(req.authority, "127.0.0.1:8080");
    assert_eq!(req.path, "/v2/pets?tags=a%20b&tags=c%26d&limit=5", "string '5' coerced to the declared integer");

    let req = request(&gw, "addPet", json!({"name": "rex", "tag": "dog"}));
    assert_eq!(req.method, "POST");
    assert_eq!(body_json(&req), json!({"name": "rex", "tag": "dog"}));
    assert_eq!(header(&req, "content-type"), Some("application/json"));

    let req = request(&gw, "find_pet_by_id", json!({"id": 42}));
    assert_eq!(req.path, "/v2/pets/42");
    let req = request(&gw, "deletePet", json!({"id": 7}));
    assert_eq!((req.method.as_str(), req.path.as_str()), ("DELETE", "/v2/pets/7"));

    // Missing required arguments and wrong types never reach the upstream.
    let server = gw.server("api").unwrap();
    let t = server.tool("addPet").unwrap();
    assert!(matches!(t.prepare(&gw.templates, &server.config, Some(&json!({"tag": "x"}))), Prepared::Done(_)));
    let t = server.tool("find_pet_by_id").unwrap();
    assert!(matches!(t.prepare(&gw.templates, &server.config, Some(&json!({"id": "abc"}))), Prepared::Done(_)));
}

#[test]
fn form_bodies_and_server_variables() {
    let doc = parse_document(&testdata("uspto.yaml")).unwrap();
    let c = convert(&doc, &Options::default()).unwrap();
    assert_eq!(c.server_url.as_deref(), Some("https://developer.uspto.gov/ds-api"));
    let gw = gateway(&doc, json!({})).unwrap();
    let req = request(&gw, "perform-search", json!({"dataset": "oa citations", "criteria": "a:b c", "rows": 10}));
    assert_eq!(req.method, "POST");
    assert_eq!(req.authority, "developer.uspto.gov");
    assert_eq!(req.path, "/ds-api/oa%20citations/v1/records", "the default of `version` fills the path");
    assert_eq!(header(&req, "content-type"), Some("application/x-www-form-urlencoded"));
    let body = String::from_utf8(req.body.clone().unwrap()).unwrap();
    assert_eq!(body, "criteria=a%3Ab%20c&rows=10&start=0", "defaults are filled in after the given arguments");
}

fn doc_with(paths: Value, components: Value) -> Value {
    json!({"openapi": "3.0.3", "info": {"title": "t", "version": "1"}, "servers": [{"url": "http://127.0.0.1:9/api"}],
           "paths": paths, "components": components})
}

#[test]
fn clashing_names_locations_and_styles() {
    let doc = doc_with(
        json!({"/items/{id}": {"parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
        "patch": {
            "operationId": "update item",
            "parameters": [
                {"name": "id", "in": "query", "schema": {"type": "integer"}},
                {"name": "X-Trace", "in": "header", "schema": {"type": "array", "items": {"type": "string"}}},
                {"name": "session", "in": "cookie", "schema": {"type": "string"}},
                {"name": "ids", "in": "query", "explode": false, "schema": {"type": "array", "items": {"type": "integer"}}},
                {"name": "Accept", "in": "header", "schema": {"type": "string"}}
            ],
            "requestBody": {"required": true, "content": {"application/merge-patch+json": {"schema": {
                "type": "object", "required": ["id", "note"],
                "properties": {"id": {"type": "string"}, "note": {"type": "string"},
                               "created": {"type": "string", "readOnly": true}}}}}},
            "responses": {"200": {"description": "ok"}}
        }}}),
        json!({}),
    );
    let c = convert(&doc, &Options::default()).unwrap();
    let tool = &c.tools[0].tool;
    assert_eq!(tool.name, "update_item");
    let arg_names: Vec<(&str, Option<&str>)> =
        tool.args.iter().map(|a| (a.name.as_str(), a.param_name.as_deref())).collect();
    assert_eq!(
        arg_names,
        [
            ("id", None),
            ("query_id", Some("id")),
            ("X-Trace", None),
            ("session", None),
            ("ids", None),
            ("body_id", Some("id")),
            ("note", None)
        ],
        "Accept is ignored as OpenAPI says; readOnly `created` is not an argument"
    );
    let gw = gateway(&doc, json!({})).unwrap();
    let req = request(
        &gw,
        "update_item",
        json!({"id": "a/b", "query_id": 3, "X-Trace": ["x", "y"], "session": "s 1", "ids": [1, 2],
               "body_id": "B", "note": "n"}),
    );
    assert_eq!(req.method, "PATCH");
    assert_eq!(req.path, "/api/items/a%2Fb?id=3&ids=1,2");
    assert_eq!(header(&req, "x-trace"), Some("x,y"));
    assert_eq!(header(&req, "cookie"), Some("session=s%201"));
    assert_eq!(header(&req, "content-type"), Some("application/merge-patch+json"));
    assert_eq!(body_json(&req), json!({"id": "B", "note": "n"}));
}

#[test]
fn non_object_bodies_are_one_argument() {
    let doc = doc_with(
        json!({
            "/bulk": {"post": {"operationId": "bulk", "requestBody": {"content": {"application/json": {"schema": {
                "type": "array", "items": {"$ref": "#/components/schemas/Item"}}}}}, "responses": {"204": {"description": "none"}}}},
            "/note": {"put": {"operationId": "note", "requestBody": {"required": true, "content": {"text/plain": {"schema": {"type": "string"}}}},
                "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {"type": "array"}}}}}}}
        }),
        json!({"schemas": {"Item": {"type": "object", "properties": {"n": {"type": "integer"}}}}}),
    );
    let gw = gateway(&doc, json!({})).unwrap();
    let listing = gw.server("api").unwrap().tool("bulk").unwrap().listing();
    assert_eq!(listing["inputSchema"]["properties"]["body"]["items"]["properties"]["n"]["type"], "integer");
    let req = request(&gw, "bulk", json!({"body": [{"n": 1}, {"n": 2}]}));
    assert_eq!(body_json(&req), json!([{"n": 1}, {"n": 2}]));
    assert_eq!(header(&req, "content-type"), Some("application/json"));
    let req = request(&gw, "bulk", json!({}));
    assert_eq!(req.body, None, "an optional body left out sends no body");
    let req = request(&gw, "note", json!({"body": "hello {{ world }}"}));
    assert_eq!(req.body.as_deref(), Some(&b"hello {{ world }}"[..]), "argument text is data, not a template");
    assert_eq!(header(&req, "content-type"), Some("text/plain"));
    assert!(gw.server("api").unwrap().tool("note").unwrap().listing().get("outputSchema").is_none());
}

#[test]
fn output_schema_from_first_2xx_json_object() {
    let doc = doc_with(
        json!({"/a": {"get": {"operationId": "a", "responses": {
            "404": {"description": "no", "content": {"application/json": {"schema": {"type": "object"}}}},
            "201": {"$ref": "#/components/responses/Made"},
            "200": {"description": "ok", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Out"}}}}}}}}),
        json!({"schemas": {"Out": {"properties": {"secret": {"type": "string", "writeOnly": true}, "v": {"type": "integer"}}}},
               "responses": {"Made": {"description": "made"}}}),
    );
    let c = convert(&doc, &Options::default()).unwrap();
    assert_eq!(
        c.tools[0].tool.output_schema,
        Some(json!({"properties": {"v": {"type": "integer"}}, "type": "object"})),
        "writeOnly fields are not part of answers"
    );
}

#[test]
fn output_schemas_can_be_left_out() {
    let doc = parse_document(&testdata("petstore-expanded.yaml")).unwrap();
    let with = convert(&doc, &Options::default()).unwrap();
    assert!(with.tools.iter().any(|t| t.tool.output_schema.is_some()));
    let without = convert(&doc, &Options { no_output_schemas: true, ..Options::default() }).unwrap();
    assert!(without.tools.iter().all(|t| t.tool.output_schema.is_none()));
    let gw = gateway(&doc, json!({"openapi": {"outputSchemas": false}})).unwrap();
    assert!(gw.server("api").unwrap().tools.iter().all(|t| t.listing().get("outputSchema").is_none()));
    assert_eq!(gateway(&doc, json!({"openapi": {"outputSchemas": "no"}})).unwrap_err().field, "openapi.outputSchemas");
    // A shallower depth cuts nested models to their type.
    let nested = doc_with(
        json!({"/a": {"get": {"operationId": "a", "responses": {"200": {"description": "ok", "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/A"}}}}}}}}),
        json!({"schemas": {"A": {"type": "object", "properties": {"b": {"$ref": "#/components/schemas/B"}}},
                           "B": {"type": "object", "properties": {"c": {"type": "string"}}}}}),
    );
    let deep = convert(&nested, &Options::default()).unwrap();
    assert_eq!(
        deep.tools[0].tool.output_schema.as_ref().unwrap()["properties"]["b"]["properties"]["c"]["type"],
        "string"
    );
    let shallow = convert(&nested, &Options { output_schema_depth: Some(1), ..Options::default() }).unwrap();
    let b = &shallow.tools[0].tool.output_schema.as_ref().unwrap()["properties"]["b"];
    assert_eq!((b["type"].as_str(), b.get("properties")), (Some("object"), None), "{b}");
    let gw = gateway(&nested, json!({"openapi": {"outputSchemaDepth": 1}})).unwrap();
    assert!(gw.server("api").unwrap().tool("a").unwrap().listing()["outputSchema"]["properties"]["b"]
        .get("properties")
        .is_none());
}

#[test]
fn security_schemes_become_credential_slots() {
    let doc = json!({
        "openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "servers": [{"url": "http://127.0.0.1:9"}],
        "security": [{"key": []}],
        "components": {"securitySchemes": {
            "key": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "basic": {"type": "http", "scheme": "basic"},
            "q": {"type": "apiKey", "in": "query", "name": "api_key"},
            "oauth": {"type": "oauth2", "flows": {}}
        }},
        "paths": {
            "/a": {"get": {"operationId": "a", "responses": {}}},
            "/b": {"get": {"operationId": "b", "security": [{"oauth": []}, {"basic": []}], "responses": {}}},
            "/c": {"get": {"operationId": "c", "security": [], "responses": {}}},
            "/d": {"get": {"operationId": "d", "security": [{"oauth": ["read"]}], "responses": {}}},
            "/e": {"get": {"operationId": "e", "security": [{"q": []}], "responses": {}}}
        }
    });
    let c = convert(&doc, &Options::default()).unwrap();
    let ids: Vec<Option<&str>> = c
        .tools
        .iter()
        .map(|t| t.tool.request_template.as_ref().unwrap().security.as_ref().map(|s| s.id.as_str()))
        .collect();
    assert_eq!(ids, [Some("key"), Some("basic"), None, None, Some("q")]);
    assert_eq!(c.security_schemes.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["key", "basic", "q"]);
    assert!(c.security_schemes.iter().all(|s| s.default_credential.is_empty()), "credentials are the operator's");
    assert!(c.warnings.iter().any(|w| w.starts_with("d: requires oauth")), "{:?}", c.warnings);
    assert!(c.warnings.iter().any(|w| w.contains("security scheme 'oauth'")));

    // Loaded as is, no credential is sent; the operator supplies it by declaring the scheme on the server.
    let gw = gateway(&doc, json!({})).unwrap();
    assert_eq!(header(&request(&gw, "a", json!({})), "x-api-key"), None);
    let filled = json!({"securitySchemes": [
        {"id": "key", "type": "apiKey", "in": "header", "name": "X-API-Key", "defaultCredential": "k1"},
        {"id": "basic", "type": "http", "scheme": "basic", "defaultCredential": "u:p"},
        {"id": "q", "type": "apiKey", "in": "query", "name": "api_key", "defaultCredential": "k&2"}]});
    let gw = gateway(&doc, filled).unwrap();
    assert_eq!(header(&request(&gw, "a", json!({})), "x-api-key"), Some("k1"));
    assert_eq!(header(&request(&gw, "b", json!({})), "authorization"), Some("Basic dTpw"));
    assert_eq!(header(&request(&gw, "c", json!({})), "x-api-key"), None);
    assert_eq!(request(&gw, "e", json!({})).path, "/e?api_key=k%262");

    let mut bad = doc.clone();
    bad["paths"]["/a"]["get"]["security"] = json!([{"nope": []}]);
    let c = convert(&bad, &Options::default()).unwrap();
    assert_eq!((c.skipped[0].pointer.as_str(), c.skipped[0].invalid), ("#/paths/~1a/get/security/0", true));
}

#[test]
fn swagger_2_is_upgraded() {
    let doc = json!({
        "swagger": "2.0", "info": {"title": "Pets v2", "version": "1"},
        "host": "127.0.0.1:9", "basePath": "/v2", "schemes": ["http"],
        "consumes": ["application/json"], "produces": ["application/json"],
        "securityDefinitions": {"basic": {"type": "basic"}, "key": {"type": "apiKey", "in": "query", "name": "k"}},
        "parameters": {"Limit": {"name": "limit", "in": "query", "type": "integer", "maximum": 50}},
        "paths": {
            "/pets": {
                "get": {"operationId": "findByTags", "security": [{"key": []}],
                    "parameters": [{"name": "tags", "in": "query", "type": "array", "items": {"type": "string"}},
                                   {"$ref": "#/parameters/Limit"}],
                    "responses": {"200": {"description": "ok", "schema": {"$ref": "#/definitions/PetList"}}}},
                "post": {"operationId": "addPet", "security": [{"basic": []}],
                    "parameters": [{"name": "body", "in": "body", "required": true, "schema": {"$ref": "#/definitions/Pet"}}],
                    "responses": {"200": {"description": "ok", "schema": {"$ref": "#/definitions/Pet"}}}}
            },
            "/pets/{id}": {
                "parameters": [{"name": "id", "in": "path", "required": true, "type": "integer"}],
                "post": {"operationId": "updateWithForm", "consumes": ["application/x-www-form-urlencoded"],
                    "parameters": [{"name": "name", "in": "formData", "type": "string", "required": true}],
                    "responses": {"200": {"description": "ok"}}}
            },
            "/pets/{id}/image": {
                "post": {"operationId": "uploadImage", "consumes": ["multipart/form-data"],
                    "parameters": [{"name": "id", "in": "path", "required": true, "type": "integer"},
                                   {"name": "file", "in": "formData", "type": "file", "required": true}],
                    "responses": {"200": {"description": "ok"}}}
            }
        },
        "definitions": {
            "Pet": {"type": "object", "required": ["name"], "properties": {"id": {"type": "integer", "readOnly": true}, "name": {"type": "string"}}},
            "PetList": {"type": "object", "properties": {"items": {"type": "array", "items": {"$ref": "#/definitions/Pet"}}}}
        }
    });
    let c = convert(&doc, &Options::default()).unwrap();
    assert_eq!(c.spec_version, "2.0");
    assert_eq!(c.server_url.as_deref(), Some("http://127.0.0.1:9/v2"));
    assert_eq!(names(&c), ["findByTags", "addPet", "updateWithForm", "uploadImage"]);
    assert!(c.skipped.is_empty(), "{:?}", c.skipped);
    let upload = &c.tools[3].tool;
    assert!(upload.request_template.as_ref().unwrap().args_to_multipart_body);
    assert!(upload.args.iter().any(|a| a.name == "file" && a.file && a.required), "{:?}", upload.args);
    assert!(c.tools[0].tool.output_schema.is_some());

    let filled = json!({"securitySchemes": [{"id": "key", "type": "apiKey", "in": "query", "name": "k", "defaultCredential": "s"}]});
    let gw = gateway(&doc, filled).unwrap();
    let req = request(&gw, "findByTags", json!({"tags": ["a", "b"], "limit": 3}));
    assert_eq!(req.path, "/v2/pets?tags=a,b&limit=3&k=s", "Swagger arrays default to csv");
    let req = request(&gw, "addPet", json!({"name": "rex"}));
    assert_eq!(body_json(&req), json!({"name": "rex"}));
    let req = request(&gw, "updateWithForm", json!({"id": 5, "name": "a b"}));
    assert_eq!((req.path.as_str(), req.body.as_deref()), ("/v2/pets/5", Some(&b"name=a%20b"[..])));
    let server = gw.server("api").unwrap();
    let t = server.tool("findByTags").unwrap();
    assert!(
        matches!(t.prepare(&gw.templates, &server.config, Some(&json!({"limit": 500}))), Prepared::Done(_)),
        "Swagger parameter constraints (maximum) are kept"
    );
}

#[test]
fn invalid_documents_are_refused_with_a_pointer() {
    let cases = [
        (json!({"info": {}}), "#", "neither"),
        (json!({"openapi": "4.0.0"}), "#/openapi", "not supported"),
        (json!({"openapi": "3.0.0", "paths": []}), "#/paths", "must be an object"),
        (json!({"openapi": "3.0.0", "paths": {"pets": {}}}), "#/paths/pets", "start with '/'"),
        (
            json!({"openapi": "3.0.0", "paths": {"/p/{id}": {"get": {"responses": {}}}}}),
            "#/paths/~1p~1{id}/get",
            "path variable {id}",
        ),
        (
            json!({"openapi": "3.0.0", "paths": {"/p": {"get": {"parameters": [{"$ref": "#/components/parameters/X"}]}}}}),
            "#/paths/~1p/get/parameters/0/$ref",
            "does not resolve",
        ),
        (
            json!({"openapi": "3.0.0", "paths": {"/p": {"post": {"requestBody": {"content": {"application/json": {"schema": {"properties": {"a": {"$ref": "#/nowhere"}}}}}}}}}}),
            "#/paths/~1p/post/requestBody/content/application~1json/schema/properties/a/$ref",
            "does not resolve",
        ),
        (
            json!({"openapi": "3.0.0", "paths": {"/p": {"get": {"parameters": [{"in": "query"}]}}}}),
            "#/paths/~1p/get/parameters/0/name",
            "required",
        ),
        (
            json!({"openapi": "3.0.0", "servers": [{"url": "http://{host}/v1"}], "paths": {}}),
            "#/servers/0/url",
            "variable without a default",
        ),
    ];
    for (doc, pointer, reason) in cases {
        // Each of these documents has one operation, or none: a fault in it leaves nothing to convert.
        match convert(&doc, &Options::default()).and_then(|c| c.refusal().map_or(Ok(c), Err)) {
            Err(e) => {
                assert_eq!(e.pointer, pointer, "{doc}: {e}");
                assert!(e.reason.contains(reason), "{e}");
            }
            Ok(c) => panic!("{doc} converted: {:?}", names(&c)),
        }
    }
    // The plugin names the server and the pointer.
    let e = gateway(&json!({"openapi": "3.0.0", "paths": []}), json!({})).unwrap_err();
    assert_eq!((e.server.as_deref(), e.field.as_str()), (Some("api"), "openapi.document#/paths"));
    let e = Gateway::from_config_str("servers:\n- name: s\n  openapi:\n    document: 'openapi: [1'\n").unwrap_err();
    assert!(e.field.starts_with("openapi.document"), "{e}");
}

/// One faulty operation is skipped with its pointer; the rest of the document converts.
#[test]
fn faulty_operations_are_skipped_not_the_document() {
    let doc = doc_with(
        json!({"/dangling": {"get": {"operationId": "dangling", "parameters": [{"$ref": "#/components/parameters/Nope"}]}},
               "/own": {"get": {"operationId": "own", "servers": [{"url": "https://{region}.example.com"}]}},
               "/ref-op": {"get": {"$ref": "#/x-ops/listThings"}},
               "/ext-op": {"get": {"$ref": "resources/things/list.yml"}},
               "/ext-item": {"$ref": "paths/item.yml"},
               "/ok": {"get": {"operationId": "ok"}}}),
        json!({}),
    );
    let mut doc = doc;
    doc["x-ops"] = json!({"listThings": {"operationId": "listThings", "parameters": [{"name": "n", "in": "query", "schema": {"type": "integer"}}]}});
    let c = convert(&doc, &Options::default()).unwrap();
    assert_eq!(names(&c), ["listThings", "ok"], "an operation may be a $ref");
    assert_eq!(c.tools[0].tool.args[0].name, "n");
    let skipped: Vec<(&str, &str, bool)> =
        c.skipped.iter().map(|s| (s.key.as_str(), s.pointer.as_str(), s.invalid)).collect();
    assert_eq!(
        skipped,
        [
            ("dangling", "#/paths/~1dangling/get/parameters/0/$ref", true),
            ("own", "#/paths/~1own/get/servers/0/url", true),
            ("GET /ext-op", "#/paths/~1ext-op/get", false),
            ("* /ext-item", "#/paths/~1ext-item", false),
        ]
    );
    assert!(c.skipped[2].reason.contains("external $ref 'resources/things/list.yml'"), "{}", c.skipped[2].reason);
    assert!(c.refusal().is_none());
    // The plugin loads the rest and logs the faults.
    let gw = gateway(&doc, json!({})).unwrap();
    assert_eq!(gw.server("api").unwrap().tools.len(), 2);
}

/// `--server-url` (and `serverUrl`) replaces every server that repeats `servers[0]` (Twilio repeats it on
/// every path item); other servers stay.
#[test]
fn server_url_replaces_every_repeat_of_servers_0() {
    let doc = json!({"openapi": "3.0.1", "info": {"title": "t", "version": "1"}, "servers": [{"url": "https://api.example.com/"}],
        "paths": {"/a": {"servers": [{"url": "https://api.example.com"}], "get": {"operationId": "a"}},
                  "/b": {"get": {"operationId": "b", "servers": [{"url": "https://api.example.com/"}]}},
                  "/c": {"get": {"operationId": "c", "servers": [{"url": "https://uploads.example.com"}]}}}});
    let c =
        convert(&doc, &Options { server_url: Some("http://127.0.0.1:9/mock".into()), ..Options::default() }).unwrap();
    let urls: Vec<&str> =
        c.tools.iter().map(|t| t.tool.request_template.as_ref().unwrap().url.as_deref().unwrap()).collect();
    assert_eq!(urls, ["http://127.0.0.1:9/mock/a", "http://127.0.0.1:9/mock/b", "https://uploads.example.com/c"]);
}

#[test]
fn unreachable_operations_are_skipped_with_reasons() {
    let doc = doc_with(
        json!({"/upload": {"post": {"operationId": "upload", "requestBody": {"required": true, "content": {"multipart/mixed": {"schema": {"type": "object"}}}}}},
               "/ext": {"get": {"operationId": "ext", "parameters": [{"$ref": "other.yaml#/components/parameters/P"}]}},
               "/host": {"get": {"operationId": "host", "parameters": [{"name": "Host", "in": "header", "required": true, "schema": {"type": "string"}}]}},
               "/ok": {"get": {"operationId": "ok", "responses": {}}},
               "/optional-upload": {"put": {"operationId": "optionalUpload", "requestBody": {"content": {"application/xml": {"schema": {"type": "object"}}}}}}}),
        json!({}),
    );
    let c = convert(&doc, &Options::default()).unwrap();
    assert_eq!(names(&c), ["ok", "optionalUpload"]);
    let reasons: Vec<(&str, &str)> = c.skipped.iter().map(|s| (s.key.as_str(), s.reason.as_str())).collect();
    assert_eq!(reasons.len(), 3);
    assert!(reasons[0].1.contains("multipart/mixed"));
    assert!(reasons[1].1.contains("external $ref 'other.yaml"));
    assert!(reasons[2].1.contains("header parameter 'Host' cannot be set"));
    assert_eq!(c.skipped[0].to_string(), format!("POST /upload (upload) at #/paths/~1upload/post: {}", reasons[0].1));
    assert!(
        c.warnings.iter().any(|w| w.contains("optionalUpload: optional request body of type application/xml")),
        "{:?}",
        c.warnings
    );
    // The plugin keeps the reasons for its log.
    let gw = gateway(&doc, json!({})).unwrap();
    assert!(
        gw.notices.iter().any(|n| n.starts_with("server 'api': skipped POST /upload (upload)")),
        "{:?}",
        gw.notices
    );
}

/// Scope of issue 9: what the gateway cannot send is left out of the tool when it is optional, with a
/// warning; only what is required and cannot be sent skips the operation.
#[test]
fn optional_inexpressible_parts_are_left_out_not_the_operation() {
    let doc = doc_with(
        json!({"/a": {"post": {"operationId": "a", "parameters": [
                {"name": "Host", "in": "header", "schema": {"type": "string"}},
                {"name": "q", "in": "query", "style": "tabDelimited", "schema": {"type": "array"}},
                {"name": "j", "in": "query", "content": {"application/json": {"schema": {"type": "object"}}}},
                {"name": "js", "in": "query", "content": {"application/json": {"schema": {"type": "string"}}}},
                {"name": "jn", "in": "query", "content": {"application/json": {"schema": {"type": "integer"}}}},
                {"name": "t", "in": "query", "content": {"text/plain": {"schema": {"type": "string"}}}},
                {"name": "p", "in": "path", "style": "deepObject", "schema": {"type": "string"}},
                {"name": "keep", "in": "query", "schema": {"type": "string"}}],
              "requestBody": {"content": {"multipart/mixed": {"schema": {"type": "object"}}}}}},
               "/a/{p}": {"get": {"operationId": "b", "parameters": [
                {"name": "p", "in": "path", "required": true, "style": "deepObject", "schema": {"type": "string"}}]}},
               "/search": {"get": {"operationId": "search", "requestBody": {"content": {"application/x-www-form-urlencoded": {
                   "schema": {"type": "object", "properties": {}, "additionalProperties": false}}}}}},
               "/free": {"post": {"operationId": "free", "requestBody": {"content": {"application/x-www-form-urlencoded": {
                   "schema": {"type": "object", "additionalProperties": {"type": "string"}}}}}}}}),
        json!({}),
    );
    let c = convert(&doc, &Options::default()).unwrap();
    assert_eq!(names(&c), ["a", "search", "free"]);
    assert_eq!(c.tools[0].tool.args.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["jn", "t", "keep"]);
    assert!(c.warnings.iter().any(|w| w.contains("'js' serialised as application/json")), "a JSON string has quotes");
    for what in [
        "header parameter 'Host'",
        "query parameter 'q': style \"tabDelimited\"",
        "'j' serialised as application/json",
        "request body of type multipart/mixed",
    ] {
        assert!(
            c.warnings.iter().any(|w| w.starts_with("a: optional ") && w.contains(what)),
            "{what}: {:?}",
            c.warnings
        );
    }
    assert_eq!(c.skipped.len(), 1);
    assert!(c.skipped[0].reason.contains("style deepObject cannot be used in the path"), "{}", c.skipped[0].reason);
    let gw = gateway(&doc, json!({})).unwrap();
    let req = request(&gw, "search", json!({}));
    assert_eq!((req.method.as_str(), req.body.as_ref()), ("GET", None), "an empty-object form body is no body");
    assert!(gw.server("api").unwrap().tool("search").unwrap().listing()["inputSchema"]["properties"]
        .as_object()
        .unwrap()
        .is_empty());
    let req = request(&gw, "free", json!({"body": {"a b": "1", "c": "2"}}));
    assert_eq!(req.body.as_deref(), Some(&b"a%20b=1&c=2"[..]), "a free-form form body's members are its fields");
}

/// Styles and form encodings as the document gives them, called through the compiled gateway.
#[test]
fn styles_and_form_encodings_are_sent_as_the_document_says() {
    let doc = doc_with(
        json!({"/v1/customers/{id}": {"post": {"operationId": "PostCustomersId", "parameters": [
                {"name": "id", "in": "path", "required": true, "style": "label", "explode": true, "schema": {"type": "array", "items": {"type": "string"}}},
                {"name": "created", "in": "query", "style": "deepObject", "explode": true, "schema": {"anyOf": [
                    {"type": "object", "properties": {"gt": {"type": "integer"}}}, {"type": "integer"}]}},
                {"name": "tags", "in": "query", "style": "pipeDelimited", "explode": false, "schema": {"type": "array", "items": {"type": "string"}}},
                {"name": "point", "in": "query", "style": "form", "explode": false, "schema": {"type": "object"}},
                {"name": "X-Ids", "in": "header", "schema": {"type": "array"}},
                {"name": "pref", "in": "cookie", "explode": true, "schema": {"type": "object"}}],
              "requestBody": {"content": {"application/x-www-form-urlencoded": {
                "encoding": {"address": {"style": "deepObject", "explode": true}, "expand": {"style": "deepObject", "explode": true},
                             "items": {"style": "deepObject", "explode": true}, "ids": {"style": "form", "explode": false}},
                "schema": {"type": "object", "required": ["email"], "properties": {
                    "email": {"type": "string"},
                    "address": {"anyOf": [{"type": "object", "properties": {"city": {"type": "string"}, "line1": {"type": "string"}}}, {"type": "string", "enum": [""]}]},
                    "expand": {"type": "array", "items": {"type": "string"}},
                    "items": {"type": "array", "items": {"type": "object", "properties": {"price": {"type": "string"}, "quantity": {"type": "integer"}}}},
                    "ids": {"type": "array", "items": {"type": "integer"}},
                    "owner": {"type": "object", "properties": {"n": {"type": "string"}}}}}}}}}}}),
        json!({}),
    );
    let c = convert(&doc, &Options::default()).unwrap();
    let args = &c.tools[0].tool.args;
    let styles: Vec<(&str, Option<Style>, Option<bool>)> =
        args.iter().map(|a| (a.name.as_str(), a.style, a.explode)).collect();
    assert_eq!(
        styles,
        [
            ("id", Some(Style::Label), Some(true)),
            ("created", Some(Style::DeepObject), None),
            ("tags", Some(Style::PipeDelimited), None),
            ("point", None, Some(false)),
            ("X-Ids", None, None),
            ("pref", None, None),
            ("email", None, None),
            ("address", Some(Style::DeepObject), None),
            ("expand", Some(Style::DeepObject), None),
            ("items", Some(Style::DeepObject), None),
            ("ids", Some(Style::Form), Some(false)),
            ("owner", None, None),
        ],
        "only what differs from the gateway's defaults is written"
    );
    assert!(args.iter().find(|a| a.name == "email").unwrap().required, "the schema's required list binds");
    let gw = gateway(&doc, json!({})).unwrap();
    let req = request(
        &gw,
        "PostCustomersId",
        json!({"id": ["a", "b c"], "created": {"gt": 5}, "tags": ["x", "y z"], "point": {"x": 1, "y": 2},
               "X-Ids": [1, 2], "pref": {"theme": "dark", "lang": "fr"},
               "email": "a@b.c", "address": {"city": "Paris", "line1": "1 rue"}, "expand": ["customer", "invoice"],
               "items": [{"price": "p_1", "quantity": 2}], "ids": [1, 2], "owner": {"n": "x"}}),
    );
    assert_eq!(req.path, "/api/v1/customers/.a.b%20c?created%5Bgt%5D=5&tags=x%7Cy%20z&point=x,1,y,2");
    assert_eq!(header(&req, "x-ids"), Some("1,2"));
    assert_eq!(header(&req, "cookie"), Some("theme=dark; lang=fr"));
    let body = String::from_utf8(req.body.clone().unwrap()).unwrap();
    assert_eq!(
        body,
        "email=a%40b.c&address%5Bcity%5D=Paris&address%5Bline1%5D=1%20rue&expand%5B0%5D=customer&expand%5B1%5D=invoice\
         &items%5B0%5D%5Bprice%5D=p_1&items%5B0%5D%5Bquantity%5D=2&ids=1,2&owner=%7B%22n%22%3A%22x%22%7D"
    );
    let req = request(&gw, "PostCustomersId", json!({"id": ["a"], "email": "e", "address": ""}));
    assert_eq!(String::from_utf8(req.body.unwrap()).unwrap(), "email=e&address=", "Stripe's \"\" unsets");
}

/// Multipart and binary bodies: files come as base64 in file arguments and go out as bytes.
#[test]
fn multipart_and_binary_bodies_carry_files() {
    let doc = doc_with(
        json!({"/images/edits": {"post": {"operationId": "createImageEdit", "requestBody": {"required": true, "content": {"multipart/form-data": {
                 "encoding": {"meta": {"style": "deepObject", "explode": true}},
                 "schema": {"type": "object", "required": ["image", "prompt"], "properties": {
                     "image": {"type": "string", "format": "binary", "description": "The image"},
                     "extra": {"type": "array", "items": {"type": "string", "format": "binary"}},
                     "prompt": {"type": "string"}, "n": {"type": "integer"},
                     "meta": {"type": "object", "properties": {"a": {"type": "string"}}},
                     "opts": {"type": "object"}}}}}}}},
               "/images/load": {"post": {"operationId": "ImageLoad", "requestBody": {"content": {
                 "application/x-tar": {"schema": {"type": "string", "format": "binary"}}}}}},
               "/raw": {"put": {"operationId": "raw", "requestBody": {"required": true, "content": {"image/*": {}}}}}}),
        json!({}),
    );
    let c = convert(&doc, &Options::default()).unwrap();
    assert_eq!(names(&c), ["createImageEdit", "ImageLoad", "raw"]);
    let edit = &c.tools[0].tool;
    let files: Vec<(&str, bool, bool)> = edit.args.iter().map(|a| (a.name.as_str(), a.file, a.required)).collect();
    assert_eq!(
        files,
        [
            ("image", true, true),
            ("extra", true, false),
            ("prompt", false, true),
            ("n", false, false),
            ("meta", false, false),
            ("opts", false, false)
        ]
    );
    assert_eq!(edit.args[0].schema.as_ref().unwrap()["description"], "The image");
    assert_eq!(edit.args[1].schema.as_ref().unwrap()["type"], "array");
    let gw = gateway(&doc, json!({})).unwrap();
    let req = request(
        &gw,
        "createImageEdit",
        json!({"image": {"content": "iVBO", "filename": "a.png", "contentType": "image/png"},
               "extra": [{"content": "AQ=="}, {"content": "Ag=="}], "prompt": "a hat", "n": 2,
               "meta": {"a": "x"}, "opts": {"q": 1}}),
    );
    let ct = header(&req, "content-type").unwrap().to_string();
    let boundary = ct.strip_prefix("multipart/form-data; boundary=").unwrap();
    let body = req.body.clone().unwrap();
    let text = String::from_utf8_lossy(&body);
    let part =
        |head: &str, data: &str| format!("--{boundary}\r\nContent-Disposition: form-data; {head}\r\n\r\n{data}\r\n");
    for expected in [
        part("name=\"prompt\"", "a hat"),
        part("name=\"n\"", "2"),
        part("name=\"meta[a]\"", "x"),
        part("name=\"opts\"\r\nContent-Type: application/json", "{\"q\":1}"),
        part("name=\"extra\"; filename=\"extra\"", "\u{1}"),
        part("name=\"extra\"; filename=\"extra\"", "\u{2}"),
    ] {
        assert!(text.contains(&expected), "{expected:?} not in {text:?}");
    }
    let image = "name=\"image\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n";
    let at = text.find(image).unwrap() + image.len();
    assert_eq!(&body[at..at + 3], &[0x89, 0x50, 0x4e], "PNG bytes, decoded");
    let req = request(&gw, "ImageLoad", json!({"body": {"content": "dGFy"}}));
    assert_eq!((header(&req, "content-type"), req.body.as_deref()), (Some("application/x-tar"), Some(&b"tar"[..])));
    let req = request(&gw, "raw", json!({"body": {"content": "AA==", "contentType": "image/gif"}}));
    assert_eq!((header(&req, "content-type"), req.body.as_deref()), (Some("image/gif"), Some(&b"\0"[..])));
    let req = request(&gw, "raw", json!({"body": {"content": "AA=="}}));
    assert_eq!(header(&req, "content-type"), Some("application/octet-stream"), "image/* is no Content-Type");
}

/// Swagger 2.0: `consumes` chooses the body's media type as the schema allows, `collectionFormat` its style.
#[test]
fn swagger_consumes_and_collection_formats() {
    let doc = json!({
        "swagger": "2.0", "info": {"title": "k", "version": "1"}, "host": "127.0.0.1:9", "schemes": ["http"],
        "paths": {"/api/v1/namespaces/{namespace}/pods/{name}": {
            "parameters": [{"name": "name", "in": "path", "required": true, "type": "string"},
                           {"name": "namespace", "in": "path", "required": true, "type": "string"}],
            "patch": {"operationId": "patchPod",
                "consumes": ["application/json-patch+json", "application/merge-patch+json", "application/strategic-merge-patch+json"],
                "parameters": [{"name": "body", "in": "body", "required": true, "schema": {"$ref": "#/definitions/Patch"}},
                               {"name": "labels", "in": "query", "type": "array", "items": {"type": "string"}, "collectionFormat": "multi"},
                               {"name": "fields", "in": "query", "type": "array", "items": {"type": "string"}},
                               {"name": "words", "in": "query", "type": "array", "items": {"type": "string"}, "collectionFormat": "ssv"},
                               {"name": "tabs", "in": "query", "type": "array", "items": {"type": "string"}, "collectionFormat": "tsv"}],
                "responses": {"200": {"description": "ok"}}},
            "put": {"operationId": "replaceOps", "consumes": ["application/json-patch+json"],
                "parameters": [{"name": "body", "in": "body", "required": true, "schema": {"type": "array", "items": {"type": "object"}}}],
                "responses": {"200": {"description": "ok"}}},
            "post": {"operationId": "form", "consumes": ["application/x-www-form-urlencoded"],
                "parameters": [{"name": "ids", "in": "formData", "type": "array", "items": {"type": "integer"}},
                               {"name": "tags", "in": "formData", "type": "array", "items": {"type": "string"}, "collectionFormat": "multi"}],
                "responses": {"200": {"description": "ok"}}}}},
        "definitions": {"Patch": {"description": "Kubernetes 1.13's patch: no type at all"}}
    });
    let c = convert(&doc, &Options::default()).unwrap();
    assert!(c.warnings.iter().any(|w| w.contains("'tabs'") && w.contains("tsv")), "{:?}", c.warnings);
    let gw = gateway(&doc, json!({})).unwrap();
    let req = request(
        &gw,
        "patchPod",
        json!({"namespace": "default", "name": "web", "body": {"metadata": {"labels": {"a": "b"}}},
               "labels": ["x", "y"], "fields": ["f", "g"], "words": ["w", "v"]}),
    );
    assert_eq!(header(&req, "content-type"), Some("application/merge-patch+json"), "an object is not a JSON Patch");
    assert_eq!(body_json(&req), json!({"metadata": {"labels": {"a": "b"}}}));
    assert_eq!(req.path, "/api/v1/namespaces/default/pods/web?labels=x&labels=y&fields=f,g&words=w%20v");
    let req =
        request(&gw, "replaceOps", json!({"namespace": "d", "name": "n", "body": [{"op": "remove", "path": "/a"}]}));
    assert_eq!(header(&req, "content-type"), Some("application/json-patch+json"));
    let req = request(&gw, "form", json!({"namespace": "d", "name": "n", "ids": [1, 2], "tags": ["a", "b"]}));
    assert_eq!(req.body.as_deref(), Some(&b"ids=1,2&tags=a&tags=b"[..]));
}

#[test]
fn selection_prefix_and_overrides() {
    let doc = parse_document(&testdata("petstore-expanded.yaml")).unwrap();
    let only = |include: Selection, exclude: Selection| {
        let c = convert(&doc, &Options { include, exclude, tool_prefix: "pet_".into(), ..Options::default() }).unwrap();
        names(&c).into_iter().map(str::to_string).collect::<Vec<_>>()
    };
    let sel = |tags: &[&str], ops: &[&str], paths: &[&str]| Selection {
        tags: tags.iter().map(|s| s.to_string()).collect(),
        operations: ops.iter().map(|s| s.to_string()).collect(),
        paths: paths.iter().map(|s| s.to_string()).collect(),
    };
    assert_eq!(only(sel(&[], &[], &["/pets/*"]), Selection::default()), ["pet_find_pet_by_id", "pet_deletePet"]);
    assert_eq!(
        only(Selection::default(), sel(&[], &["addPet", "DELETE /pets/{id}"], &[])),
        ["pet_findPets", "pet_find_pet_by_id"]
    );

    let extra = json!({"openapi": {"overrides": {
        "findPets": {"name": "list_pets", "description": "List pets.", "responseTemplate": {"body": "{{ response | length }} pets"}},
        "deletePet": {"hide": true}
    }}});
    let gw = gateway(&doc, extra).unwrap();
    let server = gw.server("api").unwrap();
    let listed: Vec<&str> = server.tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(listed, ["list_pets", "addPet", "find_pet_by_id"]);
    assert_eq!(server.tool("list_pets").unwrap().listing()["description"], "List pets.");

    let e = gateway(&doc, json!({"openapi": {"overrides": {"nope": {"hide": true}}}})).unwrap_err();
    assert_eq!(e.field, "openapi.overrides.nope");
    let e = gateway(&doc, json!({"openapi": {"overrides": {"addPet": {"hidden": true}}}})).unwrap_err();
    assert!(e.field.starts_with("openapi.overrides.addPet"), "{e}");
    let e = gateway(&doc, json!({"openapi": {"overrides": {"addPet": {"name": "findPets"}}}})).unwrap_err();
    assert!(e.to_string().contains("duplicate tool name"), "{e}");
    let e = gateway(&doc, json!({"openapi": {"bogus": 1}})).unwrap_err();
    assert!(e.field.contains("bogus"), "{e}");
}

#[test]
fn import_errors_name_the_option_at_fault() {
    let doc = parse_document(&testdata("petstore.yaml")).unwrap();
    let cases = [
        (json!({"serverUrl": "ftp://x/y"}), "openapi.serverUrl"),
        (json!({"include": {"tags": "pets"}}), "openapi.include.tags"),
        (json!({"include": {"tagz": ["pets"]}}), "openapi.include.tagz"),
        (json!({"exclude": []}), "openapi.exclude"),
        (json!({"toolPrefix": 5}), "openapi.toolPrefix"),
        (json!({"overrides": {"listPets": {"hide": "yes"}}}), "openapi.overrides.listPets.hide"),
        (
            json!({"overrides": {"listPets": {"responseTemplate": {"bdy": "x"}}}}),
            "openapi.overrides.listPets.responseTemplate.bdy",
        ),
        (json!({"overrides": {"listPets": 1}}), "openapi.overrides.listPets"),
    ];
    for (import, field) in cases {
        let e = gateway(&doc, json!({"openapi": import})).unwrap_err();
        assert_eq!((e.server.as_deref(), e.field.as_str()), (Some("api"), field), "{import}: {e}");
    }
    let e = Gateway::from_config_str(r#"{"servers":[{"name":"s","openapi":{"serverUrl":"/x"}}]}"#).unwrap_err();
    assert_eq!(e.field, "openapi.document");
    // Each option's type, and what the error says of it.
    let types = [
        (json!({"include": {"tags": ["a", 1]}}), "openapi.include.tags", "must be a list of strings"),
        (json!({"exclude": {"paths": [[]]}}), "openapi.exclude.paths", "must be a list of strings"),
        (json!({"toolPrefix": null}), "openapi.toolPrefix", "must be a string"),
        (json!({"outputSchemas": 0}), "openapi.outputSchemas", "must be true or false"),
        (json!({"outputSchemaDepth": -1}), "openapi.outputSchemaDepth", "must be a whole number >= 0"),
        (json!({"outputSchemaDepth": 1.5}), "openapi.outputSchemaDepth", "must be a whole number >= 0"),
        (
            json!({"overrides": {"listPets": {"annotations": []}}}),
            "openapi.overrides.listPets.annotations",
            "must be an object",
        ),
        (json!({"overrides": {"listPets": {"name": {}}}}), "openapi.overrides.listPets.name", "must be a string"),
    ];
    for (import, field, message) in types {
        let e = gateway(&doc, json!({"openapi": import})).unwrap_err();
        assert_eq!((e.field.as_str(), e.message.as_str()), (field, message), "{import}: {e}");
    }
    let ok = json!({"openapi": {"toolPrefix": "p_", "outputSchemas": false, "outputSchemaDepth": 2,
        "include": {"tags": ["pets"], "paths": [], "operations": []},
        "overrides": {"listPets": {"name": "all_pets", "hide": false, "annotations": {"readOnlyHint": true}}}}});
    let g = gateway(&doc, ok).unwrap();
    let listing = format!("{:?}", g.servers[0].tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>());
    assert!(listing.contains("\"all_pets\"") && !listing.contains("p_listPets"), "{listing}");
}

#[test]
fn selection_entries_that_name_nothing_are_reported() {
    let doc = parse_document(&testdata("petstore.yaml")).unwrap();
    let options = Options {
        include: Selection { tags: vec!["pets".into(), "pest".into()], ..Selection::default() },
        exclude: Selection { paths: vec!["[bad".into()], ..Selection::default() },
        ..Options::default()
    };
    let c = convert(&doc, &options).unwrap();
    assert_eq!(c.tools.len(), 3);
    assert_eq!(
        c.warnings,
        ["the selection's tag 'pest' names no operation", "the selection's path '[bad' names no operation"]
    );
}

#[test]
fn recursive_and_openapi_31_schemas_load_in_the_plugin() {
    let doc = json!({
        "openapi": "3.1.0", "info": {"title": "t", "version": "1"},
        "paths": {"/tree": {"post": {"operationId": "tree",
            "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Node"}}}},
            "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Node"}}}}}}}},
        "components": {"schemas": {"Node": {"type": "object", "properties": {
            "name": {"type": ["string", "null"], "examples": ["root"]},
            "pattern": {"type": "string", "pattern": "(?<=x)y"},
            "kind": {"$ref": "#/components/schemas/Kind", "description": "what it is"},
            "children": {"type": "array", "items": {"$ref": "#/components/schemas/Node"}}}},
            "Kind": {"enum": ["leaf", "branch"]}}}
    });
    let c = convert(&doc, &Options::default()).unwrap();
    assert!(c.warnings.iter().any(|w| w.contains("pattern dropped")), "lookbehind is not supported: {:?}", c.warnings);
    let args = &c.tools[0].tool.args;
    assert_eq!(args.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["name", "pattern", "kind", "children"]);
    assert_eq!(args[2].schema, Some(json!({"enum": ["leaf", "branch"], "description": "what it is"})));
    let gw = gateway(&doc, json!({"openapi": {"serverUrl": "/base"}})).unwrap();
    let req = request(&gw, "tree", json!({"name": null, "children": [{"name": "a", "children": []}]}));
    assert_eq!(req.path, "/base/tree");
    assert_eq!(body_json(&req), json!({"name": null, "children": [{"name": "a", "children": []}]}));
}

#[test]
fn hostile_documents_cannot_choose_hosts_or_inject_templates() {
    let doc = doc_with(
        json!({"/a/{{ config }}": {"get": {"operationId": "tpl", "responses": {}}},
               "/b": {"get": {"operationId": "b", "parameters": [{"name": "Host", "in": "header", "schema": {"type": "string"}}]}},
               "/c": {"get": {"operationId": "c", "parameters": [{"name": "q", "in": "query", "schema": {"type": "string"}}]}}}),
        json!({}),
    );
    let c = convert(&doc, &Options::default()).unwrap();
    assert_eq!(names(&c), ["b", "c"]);
    assert!(c.skipped[0].reason.contains("template syntax"));
    assert!(c.warnings.iter().any(|w| w.contains("'Host' cannot be set")), "an optional Host is left out");
    assert!(c.tools[0].tool.args.is_empty());
    let gw = gateway(&doc, json!({})).unwrap();
    let req = request(&gw, "c", json!({"q": "x&host=evil.example/{{ 1 }}\r\n"}));
    assert_eq!(req.authority, "127.0.0.1:9");
    assert_eq!(req.path, "/api/c?q=x%26host%3Devil.example%2F%7B%7B%201%20%7D%7D%0D%0A");
}

#[test]
fn output_is_stable() {
    let text = testdata("petstore-expanded.yaml");
    let a = convert_text(&text, &Options::default()).unwrap();
    let b = convert_text(&text, &Options::default()).unwrap();
    let dump = |c: &Conversion| serde_json::to_string(&c.tools.iter().map(|t| &t.tool).collect::<Vec<_>>()).unwrap();
    assert_eq!(dump(&a), dump(&b));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Every node of a document, as JSON pointers.
    fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
        out.push(at.clone());
        match v {
            Value::Object(m) => m.iter().for_each(|(k, c)| pointers(c, format!("{at}/{}", pointer_token(k)), out)),
            Value::Array(a) => a.iter().enumerate().for_each(|(i, c)| pointers(c, format!("{at}/{i}"), out)),
            _ => {}
        }
    }

    proptest! {
        #![proptest_config(crate::strategies::cases(400))]

        /// Any node of a real document replaced by anything: an error or a config the plugin loads, never a
        /// panic.
        #[test]
        fn mutated_documents_never_panic(
            file in prop_oneof![Just("petstore-expanded.yaml"), Just("uspto.yaml"), Just("link-example.yaml"), Just("callback-example.yaml")],
            pick in any::<prop::sample::Index>(),
            value in prop_oneof![Just(json!(null)), Just(json!(1)), Just(json!("x")), Just(json!([])), Just(json!({})),
                                 Just(json!({"$ref": "#/components/schemas/Pet"})), Just(json!({"$ref": "#/paths"})),
                                 Just(json!({"$ref": "#"})), Just(json!({"type": "object", "properties": {"a": {"$ref": "#/components"}}})),
                                 Just(json!("{{ x }}")), Just(json!({"type": "file"}))]
        ) {
            let mut doc = parse_document(&testdata(file)).unwrap();
            let mut all = Vec::new();
            pointers(&doc, String::new(), &mut all);
            let target = &all[pick.index(all.len())];
            if target.is_empty() {
                doc = value;
            } else if let Some(slot) = doc.pointer_mut(target) {
                *slot = value;
            }
            let _ = convert(&doc, &Options::default());
            let _ = gateway(&doc, json!({}));
        }
    }
}

#[test]
fn operation_servers_are_honoured() {
    let doc = doc_with(
        json!({"/assets": {"post": {"operationId": "upload", "servers": [{"url": "https://uploads.example.com/v{n}", "variables": {"n": {"default": "2"}}}],
                                    "requestBody": {"content": {"text/plain": {"schema": {"type": "string"}}}}}},
               "/other": {"servers": [{"url": "/other-base"}], "get": {"operationId": "other"}},
               "/plain": {"get": {"operationId": "plain"}}}),
        json!({}),
    );
    let c = convert(&doc, &Options::default()).unwrap();
    let url = |i: usize| c.tools[i].tool.request_template.as_ref().unwrap().url.clone().unwrap();
    assert_eq!(url(0), "https://uploads.example.com/v2/assets");
    assert_eq!(c.tools[0].tool.upstream.as_ref().and_then(|u| u.cluster.as_deref()), Some("uploads.example.com"));
    assert!(c.warnings.iter().any(|w| w.starts_with("upload: served by its own server")), "{:?}", c.warnings);
    assert_eq!(url(1), "http://127.0.0.1:9/other-base/other");
    assert!(c.tools[1].tool.upstream.is_none());
    assert_eq!(url(2), "http://127.0.0.1:9/api/plain");
    let gw = gateway(&doc, json!({})).unwrap();
    let req = request(&gw, "upload", json!({"body": "data"}));
    assert_eq!(
        (req.cluster.as_str(), req.authority.as_str(), req.path.as_str()),
        ("uploads.example.com", "uploads.example.com", "/v2/assets")
    );
}

#[test]
fn empty_answers_meet_an_object_output_schema() {
    use crate::upstream::UpstreamResult;
    let doc = doc_with(
        json!({"/runs/{id}/cancel": {"post": {"operationId": "cancel", "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}}],
            "responses": {"202": {"description": "accepted", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
               "/strict": {"get": {"operationId": "strict", "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {
                   "type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}, "extra": {"type": "string"}}, "additionalProperties": false}}}}}}}}),
        json!({}),
    );
    let gw = gateway(&doc, json!({})).unwrap();
    let server = gw.server("api").unwrap();
    let answer = |tool: &str, status: u16, body: &str| {
        let t = server.tool(tool).unwrap();
        let outcome = UpstreamResult::Response { status, headers: vec![], body: body.as_bytes().to_vec() };
        t.finish(&gw.templates, &server.config, &json!({}), outcome)
    };
    let r = answer("cancel", 202, "");
    assert_eq!((r["isError"].clone(), r["structuredContent"].clone()), (json!(false), json!({})));
    let r = answer("strict", 200, "");
    assert_eq!(r["isError"], true, "{{}} lacks the required id");
    let r = answer("strict", 200, r#"{"id": 1, "method": "x"}"#);
    assert!(r["content"][0]["text"].as_str().unwrap().contains("`method`: is not an accepted property"), "{r}");
}

/// `allowReserved` keeps reserved characters in a query value; `encoding.contentType` sends form fields as
/// JSON text and names multipart parts' (and files') types.
#[test]
fn allow_reserved_and_encoding_content_types_are_sent_as_the_document_says() {
    let doc = json!({
        "openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "servers": [{"url": "http://api/"}],
        "paths": {
            "/search": {"get": {"operationId": "search", "parameters": [
                {"name": "path", "in": "query", "allowReserved": true, "schema": {"type": "string"}},
                {"name": "ids", "in": "query", "allowReserved": true, "explode": false,
                 "schema": {"type": "array", "items": {"type": "string"}}},
                {"name": "plain", "in": "query", "schema": {"type": "string"}}]}},
            "/form": {"post": {"operationId": "form", "requestBody": {"content": {
                "application/x-www-form-urlencoded": {
                    "schema": {"type": "object", "properties": {
                        "tags": {"type": "array", "items": {"type": "string"}},
                        "meta": {"type": "object"}, "name": {"type": "string"}}},
                    "encoding": {"tags": {"contentType": "application/json"}}}}}}},
            "/upload": {"post": {"operationId": "upload", "requestBody": {"content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "properties": {
                        "doc": {"type": "object"}, "n": {"type": "integer"},
                        "file": {"type": "string", "format": "binary"}}},
                    "encoding": {"doc": {"contentType": "application/vnd.api+json"},
                                 "n": {"contentType": "text/plain"},
                                 "file": {"contentType": "image/png"}}}}}}}
        }
    });
    let gw = gateway(&doc, json!({})).unwrap();
    let req = request(&gw, "search", json!({"path": "a/b:c&d=e f#g", "ids": ["x,1", "y/2"], "plain": "a/b"}));
    assert_eq!(req.path, "/search?path=a/b:c%26d%3De%20f%23g&ids=x,1,y/2&plain=a%2Fb");

    let req = request(&gw, "form", json!({"tags": ["a", "b"], "meta": {"k": 1}, "name": "x y"}));
    let body = String::from_utf8(req.body.clone().unwrap()).unwrap();
    assert_eq!(body, "tags=%5B%22a%22%2C%22b%22%5D&meta=%7B%22k%22%3A1%7D&name=x%20y");

    let req = request(&gw, "upload", json!({"doc": {"a": 1}, "n": 3, "file": {"content": "AA=="}}));
    let ct = header(&req, "content-type").unwrap().to_string();
    let boundary = ct.strip_prefix("multipart/form-data; boundary=").unwrap();
    let text = String::from_utf8_lossy(req.body.as_deref().unwrap()).into_owned();
    let part =
        |head: &str, data: &str| format!("--{boundary}\r\nContent-Disposition: form-data; {head}\r\n\r\n{data}\r\n");
    for expected in [
        part("name=\"doc\"\r\nContent-Type: application/vnd.api+json", "{\"a\":1}"),
        part("name=\"n\"\r\nContent-Type: text/plain", "3"),
        part("name=\"file\"; filename=\"file\"\r\nContent-Type: image/png", "\0"),
    ] {
        assert!(text.contains(&expected), "{expected:?} not in {text:?}");
    }
    // A file's own type wins over the document's default.
    let req = request(&gw, "upload", json!({"file": {"content": "AA==", "contentType": "image/gif"}}));
    assert!(String::from_utf8_lossy(req.body.as_deref().unwrap()).contains("Content-Type: image/gif\r\n"));
}

/// A document whose operations repeat the same models (as Stripe's and Kubernetes' do) keeps each once in
/// the server's `schemaDefs`; the tools list, check arguments and check answers exactly as the inlined
/// conversion's do.
#[test]
fn shared_definitions_list_and_check_as_the_inlined_conversion() {
    use crate::upstream::UpstreamResult;
    let address = json!({"type": "object", "title": "Address", "required": ["city"], "properties": {
        "city": {"type": "string", "description": "City, district, suburb, town, or village.", "pattern": "^[A-Z]"},
        "line1": {"type": "string", "description": "Address line 1 (e.g., street, PO Box, or company name)."},
        "country": {"type": "string", "enum": ["FR", "DE", "US"], "description": "Two-letter country code."}}});
    let customer = json!({"type": "object", "title": "Customer", "required": ["id"], "properties": {
        "id": {"type": "string"}, "address": {"$ref": "#/components/schemas/address"},
        "shipping": {"type": "array", "items": {"$ref": "#/components/schemas/address"}},
        "parent": {"$ref": "#/components/schemas/customer"}}});
    let one = |id: &str, method: &str| {
        let mut op = json!({"operationId": id, "responses": {"200": {"description": "ok",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/customer"}}}}}});
        if method == "post" {
            op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {
                "type": "object", "properties": {"address": {"$ref": "#/components/schemas/address"},
                "billing": {"$ref": "#/components/schemas/address"}}}}}});
        }
        op
    };
    let doc = doc_with(
        json!({"/customers": {"get": one("list", "get"), "post": one("create", "post")},
               "/customers/{id}": {"parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                                   "get": one("get", "get"), "post": one("update", "post")}}),
        json!({"schemas": {"address": address, "customer": customer}}),
    );
    let mut conversion = convert(&doc, &Options::default()).unwrap();
    // Named after the models' titles, around names already taken.
    let defs = conversion.share_schemas(["Address".to_string()]);
    assert!(defs.contains_key("Address_2") && !defs.contains_key("Address"), "{defs:?}");
    let create = &conversion.tools.iter().find(|t| t.key == "create").unwrap().tool;
    // Arguments keep their own schema in place (coercion and defaults read it); what is inside is shared.
    let billing = create.args.iter().find(|a| a.name == "billing").unwrap();
    assert_eq!(billing.schema.as_ref().unwrap()["properties"]["city"]["pattern"], "^[A-Z]");
    assert!(serde_json::to_string(&create.output_schema).unwrap().contains("{\"$ref\":\"#/$defs/"));

    // Loaded as `mcp-gateway openapi` writes it, and with `--inline-schemas`.
    let load = |share: bool| {
        let mut c = convert(&doc, &Options::default()).unwrap();
        let defs = if share { c.share_schemas([]) } else { Map::new() };
        let tools: Vec<Value> = c.tools.iter().map(|t| serde_json::to_value(&t.tool).unwrap()).collect();
        let server = json!({"name": "api", "upstream": {"cluster": "api"}, "schemaDefs": defs, "tools": tools});
        Gateway::from_config_str(&json!({"servers": [server]}).to_string()).unwrap()
    };
    let (shared, inlined) = (load(true), load(false));
    let (s, i) = (shared.server("api").unwrap(), inlined.server("api").unwrap());
    assert_eq!(s.tools.len(), 4);
    for (a, b) in s.tools.iter().zip(&i.tools) {
        assert_eq!(a.listing(), b.listing());
    }
    let outcome =
        |body: &str| UpstreamResult::Response { status: 200, headers: vec![], body: body.as_bytes().to_vec() };
    for (tool, args, answer) in [
        ("create", json!({"address": {"city": "Paris"}, "billing": {"line1": "x"}}), r#"{"id": "c1"}"#),
        ("update", json!({"id": "c1", "address": {"city": "paris", "country": "IT"}}), r#"{"id": 1}"#),
        ("get", json!({"id": "c1"}), r#"{"id": "c", "address": {"city": "nice"}, "shipping": [{"country": "FR"}]}"#),
        ("list", json!({}), r#"{"id": "c", "parent": {"id": "p", "address": {"city": "Lyon"}}}"#),
    ] {
        let (a, b) = (s.tool(tool).unwrap(), i.tool(tool).unwrap());
        let prepared = |t: &crate::tool::Tool, gw: &Gateway| match t.prepare(&gw.templates, &s.config, Some(&args)) {
            Prepared::Upstream(req, _) => format!("{req:?}"),
            Prepared::Done(result) => result.to_string(),
        };
        assert_eq!(prepared(a, &shared), prepared(b, &inlined), "{tool}");
        let finished = |t: &crate::tool::Tool, gw: &Gateway| t.finish(&gw.templates, &s.config, &args, outcome(answer));
        assert_eq!(finished(a, &shared), finished(b, &inlined), "{tool}");
    }
    // Wrong arguments and answers are caught through the shared definitions.
    let bad = s.tool("update").unwrap().prepare(
        &shared.templates,
        &s.config,
        Some(&json!({"id": "c1", "address": {"city": "paris"}})),
    );
    assert!(matches!(&bad, Prepared::Done(r) if r.to_string().contains("address/city")), "{bad:?}");
    let r = s.tool("get").unwrap().finish(
        &shared.templates,
        &s.config,
        &json!({}),
        outcome(r#"{"id": "c", "shipping": [{"city": 1}]}"#),
    );
    assert_eq!(r["isError"], true, "{r}");
}
