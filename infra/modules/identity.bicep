// The function app's one identity (Storage, Batch, Key Vault, Event Grid, Application Insights),
// and optionally one for the shared ARM-created pool (AcrPull only).
param location string
param tags object
param appIdentityName string
param poolIdentityName string
param createPoolIdentity bool

resource appIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2024-11-30' = {
  name: appIdentityName
  location: location
  tags: tags
  properties: {} // nothing to set; the ARM schema has it required
}

resource poolIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2024-11-30' = if (createPoolIdentity) {
  name: poolIdentityName
  location: location
  tags: tags
  properties: {}
}

output appIdentityId string = appIdentity.id
output appIdentityClientId string = appIdentity.properties.clientId
output appIdentityPrincipalId string = appIdentity.properties.principalId
output poolIdentityId string = createPoolIdentity ? poolIdentity.id : ''
output poolIdentityPrincipalId string = createPoolIdentity ? poolIdentity.properties.principalId : ''
