//! Issue 11 item 6: the OpenAPI document of `/api/v1`, generated from the
//! wire types and the route table (the unit tests of `postern-admin-api`
//! check that the two name the same operations), served by the real service.

use postern_testkit::TestService;

/// The OpenAPI document is served without a token and names every route.
#[tokio::test]
async fn the_openapi_document_is_served_at_api_v1() {
    let svc = TestService::start().await.unwrap();
    let r = reqwest::get(format!("{}/api/v1/openapi.json", svc.url()))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let doc: serde_json::Value = r.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{doc}");
    let paths = doc["paths"].as_object().unwrap();
    for route in postern_admin_api::routes() {
        let method = route.verb.method().as_str().to_ascii_lowercase();
        assert!(
            paths[route.path][&method].is_object(),
            "{method} {} undocumented",
            route.path
        );
    }
    // The API itself still wants a token.
    let me = reqwest::get(format!("{}/api/v1/me", svc.url())).await.unwrap();
    assert_eq!(me.status(), 401);
}
