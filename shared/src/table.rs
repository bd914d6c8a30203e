//! The single DynamoDB table: its key schema and indexes, as `template.yaml` declares them.
//!
//! A test compares this definition with the template, and the local server and the tests
//! create the emulator's table from it, so local and deployed tables cannot drift apart.
//!
//! Which item has which keys, and the partitions of each index, are in [`crate::keys`] (and
//! `docs/architecture.md`, tested against it).

use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, LocalSecondaryIndex, Projection,
    ProjectionType, ScalarAttributeType, TableStatus,
};

/// Partition key attribute.
pub const PK: &str = "PK";
/// Sort key attribute.
pub const SK: &str = "SK";
/// The table's TTL attribute (epoch seconds; `template.yaml` enables TTL on it): DynamoDB
/// deletes an item some time after this moment, usually within days, so readers must not rely
/// on expired items being gone.
pub const TTL: &str = "expiresAt";

/// An index: name, partition key attribute, sort key attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexDef {
    /// Index name.
    pub name: &'static str,
    /// Partition key attribute.
    pub pk: &'static str,
    /// Sort key attribute.
    pub sk: &'static str,
}

/// LSI1: messages of a conversation in time order.
pub const LSI1: IndexDef = IndexDef { name: "LSI1", pk: PK, sk: "LSI1SK" };
/// GSI1: an agent's conversations by last activity; an organization's snapshots.
pub const GSI1: IndexDef = IndexDef { name: "GSI1", pk: "GSI1PK", sk: "GSI1SK" };
/// GSI2: a contact's conversations; snapshots by quality.
pub const GSI2: IndexDef = IndexDef { name: "GSI2", pk: "GSI2PK", sk: "GSI2SK" };
/// GSI3: snapshots by category.
pub const GSI3: IndexDef = IndexDef { name: "GSI3", pk: "GSI3PK", sk: "GSI3SK" };
/// GSI4: snapshots by contact.
pub const GSI4: IndexDef = IndexDef { name: "GSI4", pk: "GSI4PK", sk: "GSI4SK" };

/// GSI5: an organization's non-archived snapshots by last change (`<updatedAt>#<id>`).
pub const GSI5: IndexDef = IndexDef { name: "GSI5", pk: "GSI5PK", sk: "GSI5SK" };

/// Local secondary indexes (all projections are ALL).
pub const LOCAL_INDEXES: &[IndexDef] = &[LSI1];
/// Global secondary indexes (all projections are ALL).
pub const GLOBAL_INDEXES: &[IndexDef] = &[GSI1, GSI2, GSI3, GSI4, GSI5];

/// Every key attribute, sorted, as `AttributeDefinitions` lists them (all strings).
pub fn key_attributes() -> Vec<&'static str> {
    let mut names = vec![PK, SK];
    for ix in LOCAL_INDEXES.iter().chain(GLOBAL_INDEXES) {
        names.extend([ix.pk, ix.sk]);
    }
    names.sort_unstable();
    names.dedup();
    names
}

fn key(pk: &str, sk: &str) -> Result<Vec<KeySchemaElement>, aws_sdk_dynamodb::error::BuildError> {
    Ok(vec![
        KeySchemaElement::builder().attribute_name(pk).key_type(KeyType::Hash).build()?,
        KeySchemaElement::builder().attribute_name(sk).key_type(KeyType::Range).build()?,
    ])
}

/// Creates the table if it does not exist and waits until it is active.
/// Safe to call from several processes at once.
pub async fn ensure_table(
    client: &aws_sdk_dynamodb::Client,
    name: &str,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    if client.describe_table().table_name(name).send().await.is_err() {
        let all = || Projection::builder().projection_type(ProjectionType::All).build();
        let mut req = client
            .create_table()
            .table_name(name)
            .billing_mode(BillingMode::PayPerRequest)
            .set_key_schema(Some(key(PK, SK)?));
        for attr in key_attributes() {
            req = req.attribute_definitions(
                AttributeDefinition::builder().attribute_name(attr).attribute_type(ScalarAttributeType::S).build()?,
            );
        }
        for ix in LOCAL_INDEXES {
            req = req.local_secondary_indexes(
                LocalSecondaryIndex::builder()
                    .index_name(ix.name)
                    .set_key_schema(Some(key(ix.pk, ix.sk)?))
                    .projection(all())
                    .build()?,
            );
        }
        for ix in GLOBAL_INDEXES {
            req = req.global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(ix.name)
                    .set_key_schema(Some(key(ix.pk, ix.sk)?))
                    .projection(all())
                    .build()?,
            );
        }
        if let Err(e) = req.send().await {
            // Another process may have created it in between; anything else is real.
            let in_use = e.as_service_error().is_some_and(|s| s.is_resource_in_use_exception());
            if !in_use {
                return Err(aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string().into());
            }
        }
    }
    for _ in 0..100 {
        let status =
            client.describe_table().table_name(name).send().await?.table().and_then(|t| t.table_status().cloned());
        if status == Some(TableStatus::Active) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("table did not become active".into())
}

/// Creates the export bucket if it does not exist.
pub async fn ensure_bucket(
    client: &aws_sdk_s3::Client,
    name: &str,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    if client.head_bucket().bucket(name).send().await.is_ok() {
        return Ok(());
    }
    match client.create_bucket().bucket(name).send().await {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_bucket_already_owned_by_you()) => Ok(()),
        Err(e) => Err(aws_sdk_s3::error::DisplayErrorContext(e).to_string().into()),
    }
}
