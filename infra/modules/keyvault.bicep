// Key Vault in RBAC mode: the registry token's password (secret "registry-password", set by the
// postprovision hook) and, in Batch UserSubscription mode, what Batch keeps there itself.
param location string
param tags object
param vaultName string

@description('UserSubscription mode: the Microsoft Azure Batch service principal, which manages its own secrets here. Empty otherwise.')
param batchServicePrincipalObjectId string = ''

resource vault 'Microsoft.KeyVault/vaults@2025-05-01' = {
  name: vaultName
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

// Key Vault Secrets Officer: what the Batch docs ask for the Batch service principal on an RBAC vault.
resource batchSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(batchServicePrincipalObjectId)) {
  name: guid(vault.id, batchServicePrincipalObjectId, 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7')
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7')
    principalId: batchServicePrincipalObjectId
    principalType: 'ServicePrincipal'
    description: 'Batch UserSubscription mode: Azure Batch keeps its secrets in this vault'
  }
}

output name string = vault.name
output id string = vault.id
output uri string = vault.properties.vaultUri
