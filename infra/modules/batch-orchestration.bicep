// Batch UserSubscription mode: the Microsoft Azure Batch service principal creates pool VMs in
// this subscription, which needs the Azure Batch Service Orchestration Role on it (once per
// subscription; set assignBatchOrchestrationRole=false if it is already there).
targetScope = 'subscription'

param batchServicePrincipalObjectId string

resource orchestration 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subscription().id, batchServicePrincipalObjectId, 'a35466a1-cfd6-450a-b35e-683fcdf30363')
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'a35466a1-cfd6-450a-b35e-683fcdf30363')
    principalId: batchServicePrincipalObjectId
    principalType: 'ServicePrincipal'
    description: 'Batch UserSubscription mode: Azure Batch creates pool VMs in this subscription'
  }
}
