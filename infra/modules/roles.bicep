// Role assignments: least privilege, one per need. The function app identity (app*) gets what
// the code needs, the shared pool identity (pool*) AcrPull, and whoever runs azd (deployer*)
// what the documented commands, the hooks and `make test-azure` need. docs/deploy.md has the table
// that maps each role to the code that needs it; tests/infra checks that table against this file.
param appPrincipalId string
@description('Empty when there is no shared pool.')
param poolPrincipalId string
@description('Empty: no deployer roles.')
param deployerPrincipalId string
param deployerPrincipalType string
param storageAccountName string
param batchAccountName string
param keyVaultName string
param runsTopicName string
param registryName string
param applicationInsightsName string

resource storage 'Microsoft.Storage/storageAccounts@2025-06-01' existing = {
  name: storageAccountName
}

resource batch 'Microsoft.Batch/batchAccounts@2025-06-01' existing = {
  name: batchAccountName
}

resource vault 'Microsoft.KeyVault/vaults@2025-05-01' existing = {
  name: keyVaultName
}

resource runsTopic 'Microsoft.EventGrid/topics@2025-02-15' existing = {
  name: runsTopicName
}

resource registry 'Microsoft.ContainerRegistry/registries@2025-04-01' existing = {
  name: registryName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

// Storage Blob Data Owner
resource appBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appPrincipalId, 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b')
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b')
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Functions host storage and blob trigger (AzureWebJobsStorage); the pipeline containers and blobs'
  }
}

// Storage Queue Data Contributor
resource appQueueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appPrincipalId, '974c5e8b-45b9-4653-ba55-5f855dd0fb88')
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '974c5e8b-45b9-4653-ba55-5f855dd0fb88')
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'The finalize and intake queues (the app sends and receives) and the host queues'
  }
}

// Storage Blob Delegator
resource appBlobDelegator 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appPrincipalId, 'db58b8e5-c6ad-4a2a-8342-4190687cbf4a')
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'db58b8e5-c6ad-4a2a-8342-4190687cbf4a')
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'User delegation key for the task SAS URLs (shared/storage.py SasMinter)'
  }
}

// Azure Batch Data Contributor
resource appBatchData 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(batch.id, appPrincipalId, '6aaa78f1-f7de-44ca-8722-c64a23943cae')
  scope: batch
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '6aaa78f1-f7de-44ca-8722-c64a23943cae')
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Jobs with auto pools, tasks, task counts, job and pool cleanup (shared/batch.py)'
  }
}

// Key Vault Secrets User
resource appSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, appPrincipalId, '4633458b-17de-408a-b874-0445c86b69e6')
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '4633458b-17de-408a-b874-0445c86b69e6')
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Reads the registry password secret (shared/secrets.py)'
  }
}

// EventGrid Data Sender
resource appEventSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(runsTopic.id, appPrincipalId, 'd5a91429-5739-47e2-a06b-3470a27159e7')
  scope: runsTopic
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'd5a91429-5739-47e2-a06b-3470a27159e7')
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Publishes batchdrop.run.* lifecycle events (shared/events.py)'
  }
}

// Monitoring Metrics Publisher
resource appMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, appPrincipalId, '3913510d-42f4-4e42-8a64-420c390055eb')
  scope: applicationInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '3913510d-42f4-4e42-8a64-420c390055eb')
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Sends telemetry to Application Insights with Entra ID auth (APPLICATIONINSIGHTS_AUTHENTICATION_STRING)'
  }
}

// AcrPull
resource poolAcrPull 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(poolPrincipalId)) {
  name: guid(registry.id, poolPrincipalId, '7f951dda-4ed3-4680-a7ca-43fe172d538d')
  scope: registry
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '7f951dda-4ed3-4680-a7ca-43fe172d538d')
    principalId: poolPrincipalId
    principalType: 'ServicePrincipal'
    description: 'The shared ARM-created pool pulls task images with its identity'
  }
}

// Storage Blob Data Contributor
resource deployerBlobContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployerPrincipalId)) {
  name: guid(storage.id, deployerPrincipalId, 'ba92f5b4-2d11-453d-a403-e96b0029c9fe')
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'ba92f5b4-2d11-453d-a403-e96b0029c9fe')
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
    description: 'The deployer drops job files and reads results (docs/deploy.md, make test-azure)'
  }
}

// Azure Batch Account Reader
resource deployerBatchReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployerPrincipalId)) {
  name: guid(batch.id, deployerPrincipalId, '11076f67-66f6-4be0-8f6b-f0609fd05cc9')
  scope: batch
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '11076f67-66f6-4be0-8f6b-f0609fd05cc9')
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
    description: 'The deployer (and make test-azure) can see jobs and pools'
  }
}

// Key Vault Secrets Officer
resource deployerSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployerPrincipalId)) {
  name: guid(vault.id, deployerPrincipalId, 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7')
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7')
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
    description: 'The postprovision hook stores the registry token password'
  }
}

// AcrPush
resource deployerAcrPush 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployerPrincipalId)) {
  name: guid(registry.id, deployerPrincipalId, '8311e382-0749-4cb8-b61a-304f252e45ec')
  scope: registry
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '8311e382-0749-4cb8-b61a-304f252e45ec')
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
    description: 'The deployer pushes task images'
  }
}
